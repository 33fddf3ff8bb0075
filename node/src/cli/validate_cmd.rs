//! `weft validate`: checks an agent config file (or, with `--entries`, a file of cluster
//! config entries) without changing anything, printing every problem as one line that
//! names the fix. The unit's `ExecReload` runs it, so `systemctl reload weft` fails on a
//! bad file and the running agent keeps its config.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use crate::agent::preflight::{self, Ports};
use crate::cluster_config::Kind;
use crate::config::{AgentArgs, Settings};

/// `weft validate …`
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The agent's config file, or with --entries a file of `[[entry]] kind, name, value`
    /// (as `weft config apply` takes).
    #[arg(default_value = "/etc/weft/weft.toml")]
    pub file: PathBuf,
    /// The file holds cluster config entries, not an agent config.
    #[arg(long)]
    pub entries: bool,
    /// Print problems only (nothing when the file is fine).
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `weft validate`.
pub async fn validate(a: &ValidateArgs) -> anyhow::Result<()> {
    if a.entries {
        return entries(a);
    }
    let args = AgentArgs {
        config: Some(a.file.clone()),
        ..Default::default()
    };
    let settings = Settings::resolve(&args)?;
    // A running agent on this config holds its ports: trying them would only find it.
    let running = agent_answers(&settings).await;
    let ports = if running { Ports::Skip } else { Ports::Probe };
    let findings = preflight::check(&settings, ports);
    if !a.quiet {
        for w in &findings.warnings {
            eprintln!("warning: {w}");
        }
    }
    if !findings.errors.is_empty() {
        for e in &findings.errors {
            eprintln!("error: {e}");
        }
        bail!(
            "{}: {} problem(s); nothing was changed",
            a.file.display(),
            findings.errors.len()
        );
    }
    if !a.quiet {
        println!(
            "{}: ok (node {}, {} service(s){})",
            a.file.display(),
            settings.name,
            settings.services.len(),
            if running {
                "; an agent answers on its API, so its ports were not tried"
            } else {
                ""
            }
        );
    }
    Ok(())
}

async fn agent_answers(settings: &Settings) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .no_proxy()
        .build()
    else {
        return false;
    };
    client
        .get(format!("http://{}/healthz", settings.api))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

fn entries(a: &ValidateArgs) -> anyhow::Result<()> {
    let list = super::config_cmd::read_entries(&a.file)?;
    let mut errors = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let at = format!("entry {} ({} {})", i + 1, e.kind, e.name);
        match e.kind.parse::<Kind>() {
            Err(err) => errors.push(format!("{at}: {err}")),
            Ok(kind) => {
                if let Err(err) = crate::cluster_config::validate(kind, &e.name, &e.value) {
                    errors.push(format!("{at}: {err}"));
                }
            }
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        bail!(
            "{}: {} of {} entries invalid; nothing was changed",
            a.file.display(),
            errors.len(),
            list.len()
        );
    }
    if !a.quiet {
        println!("{}: ok ({} entries)", a.file.display(), list.len());
    }
    Ok(())
}
