//! `weft demo`: a local mesh for a first look. Three agents (separate processes of this
//! binary) on 127.0.10.1–3, sample services (two versions of `reviews` over HTTP, a TCP
//! `ratings` echo, a `frontend` calling both), light traffic, and the addresses to look
//! at. `reviews` v2 is deployed dark (the route sends everything to v1) so that a canary
//! can be rolled out with `weft rollout start`; touching `<dir>/break-v2` makes v2 fail
//! one request in five, so a rollout can be watched rolling back on its own. Ctrl-C stops
//! the agents gracefully and removes everything it created.

mod tour;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

const NODES: [&str; 3] = ["demo-1", "demo-2", "demo-3"];

fn ip(i: usize) -> String {
    format!("127.0.10.{}", i + 1)
}

/// Runs the demo until Ctrl-C.
pub async fn run(tour: bool) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let result = run_in(&dir, tour).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("weft-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// A tiny HTTP backend answering with its service and version; while the file `broken`
/// exists it answers 500 to one request in five.
async fn http_backend(
    listener: TcpListener,
    service: &'static str,
    version: &'static str,
    broken: Option<PathBuf>,
    stop: CancellationToken,
) {
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        let (sock, _) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
        };
        let broken = broken.clone();
        let served = served.clone();
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let mut lines = BufReader::new(r).lines();
            loop {
                let mut content_length = 0usize;
                let Ok(Some(request_line)) = lines.next_line().await else {
                    return;
                };
                let health = request_line.split_whitespace().nth(1) == Some("/health");
                while let Ok(Some(l)) = lines.next_line().await {
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                        content_length = v.trim().parse().unwrap_or(0);
                    }
                }
                if content_length > 0 {
                    let mut body = vec![0u8; content_length.min(1 << 20)];
                    if lines.get_mut().read_exact(&mut body).await.is_err() {
                        return;
                    }
                }
                // v2 is a little slower, so the graph shows different latencies.
                if version == "v2" {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                // Broken answers only requests: its health check still passes (a bug, not
                // a crash), so only the rollout's figures can catch it.
                let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let failing = !health && n % 5 == 0 && broken.as_ref().is_some_and(|f| f.exists());
                let (status, body) = if failing {
                    (
                        "500 Internal Server Error",
                        format!("{{\"error\":\"{service} {version} is broken\"}}\n"),
                    )
                } else {
                    (
                        "200 OK",
                        format!("{{\"service\":\"{service}\",\"version\":\"{version}\"}}\n"),
                    )
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if w.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// A TCP echo backend.
async fn echo_backend(listener: TcpListener, stop: CancellationToken) {
    loop {
        let (mut sock, _) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
        };
        tokio::spawn(async move {
            let (mut r, mut w) = sock.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

async fn local_listener() -> anyhow::Result<(TcpListener, u16)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    Ok((l, port))
}

fn write_config(dir: &Path, i: usize, services: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{}.toml", NODES[i]));
    let text = format!(
        "name = \"{name}\"\nbind = \"{ip}\"\napi = \"{ip}:7070\"\nproxy = \"{ip}:15001\"\ndns = \"{ip}:8600\"\nvip_range = \"127.{vip}.0.0/16\"\ndata_dir = \"{data}\"\naccess_log = \"off\"\nzone = \"{zone}\"\n{services}",
        name = NODES[i],
        ip = ip(i),
        // Three agents on one host: each its own range (same offsets), outside the
        // default 127.240.0.0/12 of an agent this host may run for real.
        vip = 225 + i,
        data = dir.join(NODES[i]).display(),
        zone = if i == 2 { "zone-b" } else { "zone-a" },
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

fn spawn_agent(dir: &Path, config: &Path, extra: &[&str], name: &str) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the weft binary")?;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let log2 = log.try_clone()?;
    Command::new(exe)
        .arg("agent")
        .arg("--config")
        .arg(config)
        .args(extra)
        .env("WEFT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start an agent")
}

async fn wait_ready(api: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        if let Ok(mut s) = TcpStream::connect(api).await {
            let _ = s
                .write_all(
                    format!("GET /readyz HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            if buf.starts_with(b"HTTP/1.1 200") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("agent at {api} did not become ready")
}

/// Asks `server` (the agent's `.weft` DNS) for `name`'s address.
async fn resolve(server: &str, name: &str) -> Option<std::net::Ipv4Addr> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::A));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
    sock.send_to(&q.to_vec().ok()?, server).await.ok()?;
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Message::from_vec(&buf[..n])
        .ok()?
        .answers
        .iter()
        .find_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
}

async fn create_token(api: &str, data_dir: &Path) -> anyhow::Result<String> {
    let admin = std::fs::read_to_string(data_dir.join("admin-token"))?
        .trim()
        .to_owned();
    let mut s = TcpStream::connect(api).await?;
    let body = "{\"ttl_secs\":600}";
    let req = format!(
        "POST /v1/tokens HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    let json = buf.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(json).context("token answer")?;
    v["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token in the answer")
}

async fn traffic(stop: CancellationToken) {
    // 20 requests per second to reviews: enough for a rollout step of 20 % to be judged
    // on 10 requests within 5 s.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        if let Ok(mut s) = TcpStream::connect(format!("{}:19001", ip(0))).await {
            let _ = s
                .write_all(
                    format!(
                        "GET /reviews/{} HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n",
                        n % 7
                    )
                    .as_bytes(),
                )
                .await;
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        }
        if n % 20 == 0 {
            if let Ok(mut s) = TcpStream::connect(format!("{}:19002", ip(0))).await {
                let _ = s.write_all(b"rating?").await;
                let _ = s.shutdown().await;
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            }
        }
    }
}

async fn run_in(dir: &Path, tour: bool) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let (l_v1, p_v1) = local_listener().await?;
    let (l_v2, p_v2) = local_listener().await?;
    let (l_echo, p_echo) = local_listener().await?;
    let break_v2 = dir.join("break-v2");
    let (l_front, p_front) = local_listener().await?;
    tokio::spawn(http_backend(l_front, "frontend", "v1", None, stop.clone()));
    tokio::spawn(http_backend(l_v1, "reviews", "v1", None, stop.clone()));
    tokio::spawn(http_backend(
        l_v2,
        "reviews",
        "v2",
        Some(break_v2.clone()),
        stop.clone(),
    ));
    tokio::spawn(echo_backend(l_echo, stop.clone()));

    let frontend = format!(
        "\n[[service]]\nname = \"frontend\"\nport = {p_front}\nprotocol = \"http\"\n\n[[service.upstream]]\nservice = \"reviews\"\nlisten = \"{ip}:19001\"\n\n[[service.upstream]]\nservice = \"ratings\"\nlisten = \"{ip}:19002\"\n",
        ip = ip(0)
    );
    let reviews_v1 = format!(
        "\n[[service]]\nname = \"reviews\"\nport = {p_v1}\nprotocol = \"http\"\nversion = \"v1\"\ncheck = {{ http = \"http://127.0.0.1:{p_v1}/health\", interval = \"2s\", timeout = \"1s\" }}\n"
    );
    let reviews_v2 = format!(
        "\n[[service]]\nname = \"reviews\"\nport = {p_v2}\nprotocol = \"http\"\nversion = \"v2\"\ncheck = {{ http = \"http://127.0.0.1:{p_v2}/health\", interval = \"2s\", timeout = \"1s\" }}\n\n[[service]]\nname = \"ratings\"\nport = {p_echo}\nprotocol = \"tcp\"\n"
    );
    let configs = [
        write_config(dir, 0, &frontend)?,
        write_config(dir, 1, &reviews_v1)?,
        write_config(dir, 2, &reviews_v2)?,
    ];

    // Another demo (or an agent) on these addresses would answer for ours.
    for i in 0..3 {
        if TcpStream::connect(format!("{}:7070", ip(i))).await.is_ok() {
            bail!(
                "something already listens on {}:7070: another `weft demo` still running? Stop it first (Ctrl-C there, or pkill -f 'weft agent --config {}')",
                ip(i),
                std::env::temp_dir().join("weft-demo-").display()
            );
        }
    }
    println!(
        "weft demo: starting 3 agents on 127.0.10.1-3 (logs and data in {})",
        dir.display()
    );
    let mut children = vec![spawn_agent(dir, &configs[0], &["--bootstrap"], NODES[0])?];
    let api0 = format!("{}:7070", ip(0));
    wait_ready(&api0).await?;
    for i in 1..3 {
        let token = create_token(&api0, &dir.join(NODES[0])).await?;
        let seed = ip(0);
        children.push(spawn_agent(
            dir,
            &configs[i],
            &["--join", &seed, "--token", &token],
            NODES[i],
        )?);
        wait_ready(&format!("{}:7070", ip(i))).await?;
    }
    // v2 is deployed dark: every request goes to v1 until a rollout moves it.
    let exe = std::env::current_exe().context("cannot find the weft binary")?;
    let operator_dir = dir.join(NODES[0]);
    let out = Command::new(&exe)
        .args(["route", "set", "reviews", "--split", "v1=100", "--force"])
        .env("WEFT_API", &api0)
        .env("WEFT_DATA_DIR", &operator_dir)
        .env_remove("WEFT_TOKEN")
        .env_remove("WEFT_CREDENTIAL")
        .output()
        .await
        .context("cannot run weft route set")?;
    if !out.status.success() {
        bail!(
            "cannot set the demo's route: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    tokio::spawn(traffic(stop.clone()));
    let weft = format!(
        "WEFT_API={api0} WEFT_DATA_DIR={} {}",
        operator_dir.display(),
        exe.display()
    );

    // The name the catalog gives reviews on demo-1 (the frontend's node).
    let dns0 = format!("{}:8600", ip(0));
    let mut vip = None;
    for _ in 0..50 {
        vip = resolve(&dns0, "reviews.weft.").await;
        if vip.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!();
    match vip {
        Some(vip) => {
            println!("  by name:      curl http://reviews.weft:{p_v1}/   (on demo-1; reviews.weft is {vip}, no upstream configured)");
            println!(
                "                this host resolves .weft after: sudo {} dns install --dns {dns0}",
                std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "weft".into())
            );
            println!(
                "                or without touching the host: curl --resolve reviews.weft:{p_v1}:{vip} http://reviews.weft:{p_v1}/"
            );
            println!("                dig @{} -p 8600 reviews.weft v2.reviews.weft", ip(0));
        }
        None => println!("  by name:      (demo-1's DNS did not answer for reviews.weft yet: dig @{} -p 8600 reviews.weft)", ip(0)),
    }
    println!(
        "  dashboards:   http://{}:7070/   http://{}:7070/   http://{}:7070/",
        ip(0),
        ip(1),
        ip(2)
    );
    println!("  members:      WEFT_API={api0} weft members");
    println!("  services:     WEFT_API={api0} weft services");
    println!("  metrics:      curl http://{api0}/metrics");
    println!(
        "  or by port:   curl http://{}:19001/   (frontend's upstream to reviews)",
        ip(0)
    );
    println!(
        "                curl -x http://{}:15001 http://reviews/",
        ip(0)
    );
    println!(
        "  operator:     WEFT_DATA_DIR={} holds the admin credential (weft route, weft rollout, weft token create)",
        operator_dir.display()
    );
    println!();
    println!("  a canary in one command (reviews v2 is deployed but gets no traffic yet):");
    println!(
        "    {weft} rollout start reviews --to v2 --steps 20,50,100 --interval 5s --min-requests 10"
    );
    println!("    {weft} rollout status reviews        (or http://{api0}/rollouts)");
    println!(
        "  and one that rolls back on its own: touch {} (v2 then fails 1 request in 5) before starting it; rm it to heal v2",
        break_v2.display()
    );
    // Ctrl-C, or SIGTERM (`timeout`, `kill`): the agents are stopped either way, never
    // left running on the demo's addresses.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let stopped = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    tokio::pin!(stopped);
    let mut interrupted = false;
    if tour {
        let op = tour::Operator::new(exe.clone(), api0.clone(), &operator_dir);
        let upstream = format!("{}:19001", ip(0));
        tokio::select! {
            r = tour::run(&op, &upstream) => {
                if let Err(e) = r {
                    println!("tour stopped: {e:#}");
                }
            }
            _ = &mut stopped => interrupted = true,
        }
    } else {
        println!("  a guided tour (split, deny, rollout): weft demo --tour");
    }

    let mut exited = None;
    if !interrupted {
        println!("traffic is flowing; press Ctrl-C to stop");
        tokio::select! {
            _ = &mut stopped => {}
            r = wait_any(&mut children) => exited = Some(r),
        }
    }
    stop.cancel();
    println!("\nstopping the agents…");
    for c in children.iter() {
        if let Some(pid) = c.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for c in children.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        let _ = c.kill().await;
    }
    if let Some(name) = exited {
        bail!("agent {name} exited unexpectedly; see its log above the cleanup")
    }
    println!("done; removed {}", dir.display());
    Ok(())
}

async fn wait_any(children: &mut [Child]) -> String {
    loop {
        for (i, c) in children.iter_mut().enumerate() {
            if let Ok(Some(_)) = c.try_wait() {
                return NODES[i].to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
