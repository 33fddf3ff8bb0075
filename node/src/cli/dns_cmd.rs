//! `weft dns install|uninstall`: a systemd-resolved drop-in that sends `*.weft` — and only
//! it — to the agent's DNS, so every program on the host resolves `reviews.weft` through
//! the normal resolver (getent, curl, glibc and anything else), with nothing else of the
//! host's DNS changed. Where resolved is not running, it says so and how to do the same
//! with another resolver.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Subcommand;

/// First line of the drop-in: only a file that starts with it is removed.
const MARK: &str = "# Written by `weft dns install`";
/// The drop-in, relative to the root.
const DROP_IN: &str = "etc/systemd/resolved.conf.d/weft.conf";

/// `weft dns …`
#[derive(Debug, Subcommand)]
pub enum DnsAction {
    /// Route `*.weft` lookups on this host to the agent's DNS (systemd-resolved).
    Install {
        /// The agent's DNS address (its `dns` key).
        #[arg(long, default_value = "127.0.0.1:8600")]
        dns: std::net::SocketAddr,
        /// Treat this directory as `/` (packaging, tests); resolved is not restarted.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Remove what `install` wrote.
    Uninstall {
        /// Treat this directory as `/`; resolved is not restarted.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

/// The drop-in's text for `dns`.
pub fn drop_in(dns: std::net::SocketAddr) -> String {
    format!(
        "{MARK}: send *.weft, and only it, to the weft agent.\n[Resolve]\nDNS={dns}\nDomains=~weft\n"
    )
}

fn resolved_running(root: &Path) -> bool {
    root.join("run/systemd/resolve").is_dir()
}

fn restart_resolved(root: &Path) -> anyhow::Result<()> {
    if root != Path::new("/") {
        return Ok(());
    }
    let status = std::process::Command::new("systemctl")
        .args(["restart", "systemd-resolved"])
        .status()
        .context("cannot run systemctl")?;
    if !status.success() {
        bail!("systemctl restart systemd-resolved failed ({status})");
    }
    Ok(())
}

/// Runs a `weft dns` command.
pub fn dns(action: &DnsAction) -> anyhow::Result<()> {
    match action {
        DnsAction::Install { dns, root } => {
            if !resolved_running(root) {
                bail!(
                    "systemd-resolved is not running on this host (no {}): point your resolver's `weft` zone at {dns} yourself, e.g. dnsmasq `server=/weft/{}#{}`, or unbound `stub-zone: name: weft` with `stub-addr: {}@{}`",
                    root.join("run/systemd/resolve").display(),
                    dns.ip(),
                    dns.port(),
                    dns.ip(),
                    dns.port()
                );
            }
            let path = root.join(DROP_IN);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            std::fs::write(&path, drop_in(*dns))
                .with_context(|| format!("cannot write {} (run as root)", path.display()))?;
            restart_resolved(root)?;
            println!(
                "*.weft now resolves through {dns} ({}); `weft dns uninstall` undoes it",
                path.display()
            );
            Ok(())
        }
        DnsAction::Uninstall { root } => {
            let path = root.join(DROP_IN);
            match std::fs::read_to_string(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!("nothing to remove: {} does not exist", path.display());
                    return Ok(());
                }
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
                Ok(text) if !text.starts_with(MARK) => {
                    bail!("{} was not written by weft; left as it is", path.display())
                }
                Ok(_) => {}
            }
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {} (run as root)", path.display()))?;
            if resolved_running(root) {
                restart_resolved(root)?;
            }
            println!("removed {}", path.display());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_writes_only_the_weft_zone_and_uninstall_removes_only_its_own_file() {
        let root = tempfile::tempdir().expect("dir");
        let dns: std::net::SocketAddr = "127.0.0.1:8600".parse().expect("addr");
        let err = super::dns(&DnsAction::Install {
            dns,
            root: root.path().into(),
        })
        .expect_err("no resolved here");
        assert!(err.to_string().contains("dnsmasq"), "{err}");
        std::fs::create_dir_all(root.path().join("run/systemd/resolve")).expect("dir");
        super::dns(&DnsAction::Install {
            dns,
            root: root.path().into(),
        })
        .expect("installed");
        let text = std::fs::read_to_string(root.path().join(DROP_IN)).expect("written");
        assert!(
            text.contains("DNS=127.0.0.1:8600\nDomains=~weft\n"),
            "{text}"
        );
        super::dns(&DnsAction::Uninstall {
            root: root.path().into(),
        })
        .expect("removed");
        assert!(!root.path().join(DROP_IN).exists());
        std::fs::write(root.path().join(DROP_IN), "[Resolve]\nDNS=1.1.1.1\n").expect("theirs");
        assert!(super::dns(&DnsAction::Uninstall {
            root: root.path().into(),
        })
        .is_err());
        assert!(
            root.path().join(DROP_IN).exists(),
            "someone else's file is kept"
        );
    }
}
