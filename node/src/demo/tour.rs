//! `weft demo --tour`: once the demo mesh is up, shows what the mesh does in three steps
//! with the commands an operator would type, each printed before it runs: a 50/50 split
//! (and the answers counted per version), a deny (and the 403 an app gets), and a
//! progressive rollout of reviews v2 watched until it is promoted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::Command;

/// Runs `weft ARGS` as the demo's operator, printing it first.
pub struct Operator {
    exe: PathBuf,
    api: String,
    data_dir: PathBuf,
}

impl Operator {
    /// The operator of the demo cluster (`data_dir` holds its admin credential).
    pub fn new(exe: PathBuf, api: String, data_dir: &Path) -> Self {
        Self {
            exe,
            api,
            data_dir: data_dir.to_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        println!("    $ weft {}", args.join(" "));
        let out = Command::new(&self.exe)
            .args(args)
            .env("WEFT_API", &self.api)
            .env("WEFT_DATA_DIR", &self.data_dir)
            .env_remove("WEFT_TOKEN")
            .env_remove("WEFT_CREDENTIAL")
            .output()
            .await
            .context("cannot run weft")?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() {
            bail!(
                "weft {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        for line in text.lines() {
            println!("      {line}");
        }
        Ok(text)
    }
}

/// One request through frontend's upstream to reviews: (status, body).
async fn ask(upstream: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(upstream).await.ok()?;
    s.write_all(b"GET /tour HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Some((status, body))
}

/// Sends `n` requests and counts the answers by the version that gave them.
async fn count_versions(upstream: &str, n: usize) -> (usize, usize, usize) {
    let (mut v1, mut v2, mut other) = (0, 0, 0);
    for _ in 0..n {
        match ask(upstream).await {
            Some((200, b)) if b.contains("\"v1\"") => v1 += 1,
            Some((200, b)) if b.contains("\"v2\"") => v2 += 1,
            _ => other += 1,
        }
    }
    (v1, v2, other)
}

/// The three steps; `upstream` is frontend's listener for reviews.
pub async fn run(op: &Operator, upstream: &str) -> anyhow::Result<()> {
    println!();
    println!("tour 1/3: a split. Half of reviews' traffic to v2, for everyone:");
    op.run(&["route", "set", "reviews", "--split", "v1=50,v2=50"])
        .await?;
    // A gossip round or two until every node applied it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (v1, v2, other) = count_versions(upstream, 40).await;
    println!(
        "    40 requests from frontend: {v1} answered by v1, {v2} by v2{}",
        if other > 0 {
            format!(", {other} failed")
        } else {
            String::new()
        }
    );
    op.run(&["route", "set", "reviews", "--split", "v1=100"])
        .await?;

    println!();
    println!("tour 2/3: a deny. frontend may no longer call reviews:");
    op.run(&[
        "policy",
        "deny",
        "frontend",
        "reviews",
        "--name",
        "tour-deny",
    ])
    .await?;
    let mut shown = false;
    for _ in 0..20 {
        if let Some((403, body)) = ask(upstream).await {
            println!("    frontend now gets: 403 {}", body.trim());
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !shown {
        println!("    (the deny did not reach frontend's node within 5 s)");
    }
    op.run(&["config", "delete", "policy", "tour-deny"]).await?;

    println!();
    println!(
        "tour 3/3: a progressive rollout of reviews v2, promoted on its own if v2 stays healthy:"
    );
    op.run(&[
        "rollout",
        "start",
        "reviews",
        "--to",
        "v2",
        "--steps",
        "20,50,100",
        "--interval",
        "4s",
        "--min-requests",
        "10",
    ])
    .await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()?;
    let url = format!("http://{}/v1/rollouts", op.api);
    let mut last = String::new();
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(resp) = client.get(&url).send().await else {
            continue;
        };
        let Ok(v) = resp.json::<serde_json::Value>().await else {
            continue;
        };
        let Some(r) = v["rollouts"]
            .as_array()
            .and_then(|l| l.iter().find(|r| r["service"] == "reviews"))
        else {
            continue;
        };
        let now = format!(
            "{} at {} % on v2",
            r["state"].as_str().unwrap_or("?"),
            r["weight"]
        );
        if now != last {
            println!("    reviews: {now}");
            last = now;
        }
        if matches!(
            r["state"].as_str(),
            Some("promoted" | "rolled_back" | "aborted")
        ) {
            break;
        }
    }
    println!();
    println!("tour done; the demo keeps running (the dashboards show what happened).");
    Ok(())
}
