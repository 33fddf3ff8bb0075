//! `weft ca status`, `add-replica` / `remove-replica` (through any agent, carried out on
//! the member concerned), `backup` (through the agent that holds the root key) and
//! `restore` (offline, into a stopped agent's data dir).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;

use anyhow::{bail, Context as _};

use super::args::CaAction;
use super::client::ApiClient;
use crate::authority::Act;
use crate::ca_role::backup;
use crate::identity::IdentityFiles;
use crate::store::Store;

fn passphrase() -> anyhow::Result<String> {
    match std::env::var("WEFT_CA_PASSPHRASE") {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => bail!(
            "set WEFT_CA_PASSPHRASE to the backup's passphrase (at least {} characters)",
            backup::MIN_PASSPHRASE
        ),
    }
}

/// Runs a `weft ca` command.
pub async fn ca(action: &CaAction) -> anyhow::Result<()> {
    match action {
        CaAction::Status(args) => {
            let api = ApiClient::new(args)?;
            let v: serde_json::Value = api.get("/v1/ca").await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let when = |unix: u64| {
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix),
                )
                .to_string()
            };
            println!("cluster        {}", v["cluster"].as_str().unwrap_or("-"));
            let roots: Vec<String> = v["roots"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect();
            println!(
                "root sha256    {}{}",
                v["root_sha256"].as_str().unwrap_or("-"),
                if roots.len() > 1 {
                    format!(
                        " (also trusted during the rotation: {})",
                        roots[1..].join(", ")
                    )
                } else {
                    String::new()
                }
            );
            println!(
                "root expires   {}",
                when(v["root_expiry_unix"].as_u64().unwrap_or(0))
            );
            if let Some(r) = v["rotation"].as_object() {
                let state = match (r.get("finished_at_unix").and_then(|x| x.as_u64()), r.get("all_moved_at_unix").and_then(|x| x.as_u64())) {
                    (Some(f), _) => format!("finished {}", when(f)),
                    (None, Some(m)) => format!("every member moved at {}; the old root retires one certificate lifetime later", when(m)),
                    (None, None) => "running: members are moving to the new root".into(),
                };
                println!("rotation       {state}");
            }
            let replicas: Vec<String> = v["holders"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|h| {
                    format!(
                        "{} ({}{}, intermediate until {})",
                        h["node"].as_str().unwrap_or("-"),
                        h["status"].as_str().unwrap_or("-"),
                        if h["root"] == true {
                            ", root holder"
                        } else {
                            ""
                        },
                        when(h["intermediate_expiry_unix"].as_u64().unwrap_or(0))
                    )
                })
                .collect();
            println!(
                "replicas       {}",
                if replicas.is_empty() {
                    "none alive (restore a backup: weft ca restore)".into()
                } else {
                    replicas.join("\n               ")
                }
            );
            if let Some(r) = v["this_replica"].as_object() {
                println!(
                    "this replica   issued {} certificates since start, last at {}",
                    r.get("issued").and_then(|x| x.as_u64()).unwrap_or(0),
                    match r.get("last_issue_unix").and_then(|x| x.as_u64()) {
                        Some(0) | None => "-".into(),
                        Some(t) => when(t),
                    }
                );
            }
            println!(
                "revocations    {} entries in force",
                v["revocations"]["entries"]
            );
            Ok(())
        }
        CaAction::Rotate(client) => {
            let api = ApiClient::new(client)?;
            let v: serde_json::Value = api
                .act(
                    reqwest::Method::POST,
                    "/v1/ca/rotate",
                    None,
                    Act::RotateRoot,
                )
                .await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "root rotation started: new root {}; both roots are trusted until every certificate chains to the new one, then the old one ({}) is retired. Follow it with weft ca status. Operator credentials made before now stop working then: make them again (weft operator create).",
                    v["new_root_sha256"].as_str().unwrap_or("-"),
                    v["old_root_sha256"].as_str().unwrap_or("-")
                );
            }
            Ok(())
        }
        CaAction::AddReplica { node, client } | CaAction::RemoveReplica { node, client } => {
            let add = matches!(action, CaAction::AddReplica { .. });
            let name = weft_ca::NodeName::new(node.as_str())?;
            let api = ApiClient::new(client)?;
            let (method, act) = if add {
                (reqwest::Method::POST, Act::AddReplica { node: name })
            } else {
                (reqwest::Method::DELETE, Act::RemoveReplica { node: name })
            };
            let v: serde_json::Value = api
                .act(method, &format!("/v1/ca/replicas/{node}"), None, act)
                .await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if add && v["already"].as_bool() == Some(true) {
                println!("{node} is already a CA replica");
            } else if add {
                let expiry = v["intermediate"]["not_after_unix"].as_u64().unwrap_or(0);
                println!(
                    "{node} is a CA replica (intermediate {} until {})",
                    v["intermediate"]["serial"].as_str().unwrap_or("-"),
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(expiry)
                    )
                );
            } else if v["was_replica"].as_bool() == Some(true) {
                println!("{node} is no longer a CA replica");
            } else {
                println!("{node} was not a CA replica");
            }
            Ok(())
        }
        CaAction::Backup { out, client } => {
            let pass = passphrase()?;
            if pass.chars().count() < backup::MIN_PASSPHRASE {
                bail!(backup::BackupError::WeakPassphrase);
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(out)
                .with_context(|| {
                    format!(
                        "cannot create {} (an existing file is not replaced)",
                        out.display()
                    )
                })?;
            let api = ApiClient::new(client)?;
            let answer: serde_json::Value = api
                .act(
                    reqwest::Method::POST,
                    "/v1/ca/backup",
                    Some(serde_json::json!({ "passphrase": pass })),
                    Act::CaBackup,
                )
                .await
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(out);
                })?;
            let sealed = answer["backup"]
                .as_str()
                .and_then(|b| crate::rpc::messages::unb64(b, "backup").ok())
                .context("the agent's answer holds no backup")?;
            file.write_all(&sealed)?;
            file.sync_all()?;
            eprintln!(
                "CA backup written to {} ({} bytes, age-encrypted with WEFT_CA_PASSPHRASE); keep it and the passphrase apart",
                out.display(),
                sealed.len()
            );
            Ok(())
        }
        CaAction::Restore { input, data_dir } => {
            let pass = passphrase()?;
            let sealed = crate::store::files::read_limited(input, backup::MAX_BACKUP)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let restored = backup::open(&sealed, &pass)?;
            let files = IdentityFiles::new(data_dir);
            let identity = files.load().with_context(|| {
                format!("{} holds no node identity: restore onto a member of the cluster (join it first)", data_dir.display())
            })?;
            let root = files.root_cert()?;
            if identity.info.cluster != restored.cluster || root != restored.root_cert {
                bail!(backup::BackupError::OtherCluster {
                    expected: format!(
                        "cluster {} (root in {})",
                        identity.info.cluster,
                        data_dir.display()
                    ),
                    found: format!("cluster {} with another root", restored.cluster),
                });
            }
            let store = Store::open(&data_dir.join("store")).with_context(|| {
                "cannot open the node's store: stop the agent first (systemctl stop weft)"
                    .to_owned()
            })?;
            store.import_ca_state(&restored.state)?;
            drop(store);
            files.save_ca_key(&restored.check()?)?;
            eprintln!(
                "{} ({}) now holds the root key of cluster {}; start its agent: it takes the CA role. Make sure the old root holder stays gone (two would issue independently).",
                identity.info.name,
                data_dir.display(),
                restored.cluster
            );
            Ok(())
        }
    }
}
