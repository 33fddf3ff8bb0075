//! Operating weft as an SRE would: `weft status` and `weft doctor` against real agents,
//! readiness held back while a listener's port is taken by another program (and given
//! back when it frees), and the first-start preflight that refuses a bad file before a
//! CA is created or a token spent.

use std::net::TcpListener;
use std::time::Duration;

use weft_tests::backends::Backend;
use weft_tests::{eventually, eventually_http, http_get, Cluster};

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_and_doctor_describe_the_node_and_a_taken_port() -> anyhow::Result<()> {
    let mut c = Cluster::new("status_and_doctor_describe_the_node_and_a_taken_port");
    c.allow_error("cannot open upstream listener");
    c.formed(2)?;

    // Healthy: both commands succeed; status shows the peer and config agreement.
    eventually(
        "status agrees with the peer",
        Duration::from_secs(15),
        || {
            let out = c.agent("vm-1").cli(&["status"]);
            let (stdout, _) = text(&out);
            Ok((out.status.success()
                && stdout.contains("ready        yes")
                && stdout.contains("2 alive, 0 failed")
                && stdout.contains("the same on all 1 alive peers"))
            .then_some(()))
        },
    )?;
    let out = c.agent("vm-1").cli(&["doctor"]);
    let (stdout, stderr) = text(&out);
    println!("{stdout}");
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("clock")
            && stdout.contains("largest offset")
            && stdout.contains("over 1 peer"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");

    // A TCP service asked for through the HTTP proxy: a 502 that says how to reach it.
    c.register(
        "vm-2",
        &["--name", "db", "--port", "1", "--protocol", "tcp"],
    )?;
    let proxy = c.agent("vm-1").proxy();
    let answer = eventually("vm-1 knows db", Duration::from_secs(15), || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(&proxy)?;
        s.write_all(b"GET http://db/ HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out.contains("TCP service").then_some(out))
    })?;
    assert!(
        answer.starts_with("HTTP/1.1 502") && answer.contains("CONNECT db:PORT"),
        "{answer}"
    );

    // Another program holds the port of a new upstream listener: not ready, and both
    // commands say which port and how to find the program.
    let ip = c
        .agent("vm-1")
        .api()
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let holder = TcpListener::bind((ip.as_str(), 0))?;
    let port = holder.local_addr()?.port();
    let spec = format!("reviews={ip}:{port}");
    c.register(
        "vm-1",
        &["--name", "web", "--port", "1", "--upstream", &spec],
    )?;
    c.wait_not_ready("vm-1", Duration::from_secs(10))?;
    let out = c.agent("vm-1").cli(&["status"]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains(&format!("{ip}:{port}"))
            && stderr.contains("another program holds the port"),
        "{stderr}"
    );
    let out = c.agent("vm-1").cli(&["doctor"]);
    let (stdout, _) = text(&out);
    assert!(
        !out.status.success() && stdout.contains("FAIL  listener"),
        "{stdout}"
    );
    let readyz = http_get(&c.agent("vm-1").api(), "/readyz");
    assert!(readyz.is_err(), "{readyz:?}");

    // The port frees: the listener opens on its own and the node is ready again.
    drop(holder);
    c.wait_ready("vm-1")?;
    let out = c.agent("vm-1").cli(&["status"]);
    assert!(out.status.success(), "{:?}", text(&out));
    Ok(())
}

#[test]
fn a_bad_file_is_refused_before_anything_is_created() -> anyhow::Result<()> {
    let mut c = Cluster::new("a_bad_file_is_refused_before_anything_is_created");
    let dir = tempfile::tempdir()?;

    // Two bad services: both are named at once, and nothing is bootstrapped.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[service]]\nname = \"web\"\nport = 0\n[[service]]\nname = \"api\"\nport = 80\nprotocol = \"ftp\"\n",
    )?;
    // Starts vm-1 on `path`: it must exit, log every `says`, and leave its data dir empty.
    let refused = |c: &mut Cluster, path: &str, says: &[&str]| -> anyhow::Result<()> {
        c.spawn("vm-1", &["--bootstrap", "--config", path]);
        assert_ne!(
            c.agent_mut("vm-1").wait_exit(Duration::from_secs(20))?,
            Some(0)
        );
        let log = c.agent("vm-1").log_text();
        assert!(says.iter().all(|s| log.contains(s)), "{log}");
        let created: Vec<_> = std::fs::read_dir(c.data_dir("vm-1"))?.collect();
        assert!(created.is_empty(), "the data dir holds {created:?}");
        Ok(())
    };
    let path = bad.display().to_string();
    refused(
        &mut c,
        &path,
        &[
            "service web: invalid `port`",
            "service api: invalid `protocol`",
            "nothing was changed",
        ],
    )?;

    // `weft validate` says the same without starting anything.
    let out = c.agent("vm-1").cli(&["validate", &path]);
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success() && stderr.contains("2 problem(s)"),
        "{stderr}"
    );

    // A port another program holds is found before the CA is made.
    let holder = TcpListener::bind("127.0.0.1:0")?;
    let port = holder.local_addr()?.port();
    let taken = dir.path().join("taken.toml");
    std::fs::write(
        &taken,
        format!("[[service]]\nname = \"web\"\nport = 1\n[[service.upstream]]\nservice = \"api\"\nlisten = \"127.0.0.1:{port}\"\n"),
    )?;
    let path = taken.display().to_string();
    refused(
        &mut c,
        &path,
        &[&format!("cannot listen on 127.0.0.1:{port}/tcp")],
    )?;

    // With the port free, the same file starts a cluster.
    drop(holder);
    c.spawn("vm-1", &["--bootstrap", "--config", &path]);
    c.wait_ready("vm-1")?;
    Ok(())
}

#[test]
fn an_app_bound_to_the_hosts_own_address_is_reachable() -> anyhow::Result<()> {
    let mut c = Cluster::new("an_app_bound_to_the_hosts_own_address_is_reachable");
    c.formed(2)?;
    // vm-2's app listens on vm-2's own address only (not 127.0.0.1), as an app bound to
    // a VM's address does.
    let vm2 = c.agent("vm-2").ip.to_string();
    let app = Backend::http_on_ip("reviews", &vm2, 0);
    let port = app.port().to_string();
    c.register(
        "vm-2",
        &[
            "--name",
            "reviews",
            "--port",
            &port,
            "--protocol",
            "http",
            "--address",
            &vm2,
        ],
    )?;
    let up = c.client_upstream("vm-1", "reviews", 19001)?;
    eventually_http(
        "reviews through the mesh",
        Duration::from_secs(20),
        &up,
        "reviews",
        "/",
        Some(200),
    )?;

    // An address that is not this host's is refused, naming the key.
    let out = c.agent("vm-2").cli(&[
        "service",
        "register",
        "--name",
        "other",
        "--port",
        "80",
        "--address",
        "192.0.2.7",
    ]);
    let (_, err) = text(&out);
    assert!(
        !out.status.success()
            && err.contains("address")
            && err.contains("not an address of this host"),
        "{err}"
    );
    Ok(())
}

/// Kills the receiver when the test ends, passed or not.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn spans_of_both_hops_reach_a_real_otlp_receiver() -> anyhow::Result<()> {
    let mut c = Cluster::new("spans_of_both_hops_reach_a_real_otlp_receiver");
    let dir = tempfile::tempdir()?;
    let spans = dir.path().join("spans.jsonl");
    // One Python process: the OTLP receiver (official protobuf definitions) and, on GET,
    // the app behind the mesh that answers the traceparent it was sent.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let _receiver = Child(
        std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/clients/otlp_receiver.py"
            ))
            .args(["127.0.0.1", &port.to_string()])
            .arg(&spans)
            .spawn()?,
    );
    eventually("the receiver listens", Duration::from_secs(10), || {
        Ok(std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ()))
    })?;
    let endpoint = format!("http://127.0.0.1:{port}");
    c.bootstrap("vm-1", &["--otlp-endpoint", &endpoint])?;
    c.join("vm-2", "vm-1", &["--otlp-endpoint", &endpoint])?;
    c.register(
        "vm-2",
        &[
            "--name",
            "app",
            "--port",
            &port.to_string(),
            "--protocol",
            "http",
        ],
    )?;
    let up = c.client_upstream("vm-1", "app", 19001)?;

    // The app's own span: trace T, span A.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let app_span = "00f067aa0ba902b7";
    let request = format!(
        "GET /hello HTTP/1.1\r\nHost: app\r\ntraceparent: 00-{trace}-{app_span}-01\r\nConnection: close\r\n\r\n"
    );
    let seen_by_app = eventually("app reachable", Duration::from_secs(20), || {
        Ok(weft_tests::backends::http_raw(&up, &request)
            .ok()
            .filter(|(status, _)| *status == 200)
            .map(|(_, text)| text))
    })?;
    let seen = seen_by_app
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_owned();

    let lines = eventually("both hops' spans received", Duration::from_secs(15), || {
        let text = std::fs::read_to_string(&spans).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|s: &serde_json::Value| s["trace_id"] == trace)
            .collect();
        let kinds = |k: &str| lines.iter().filter(|s| s["kind"] == k).count();
        Ok((kinds("SPAN_KIND_CLIENT") >= 1 && kinds("SPAN_KIND_SERVER") >= 1).then_some(lines))
    })?;
    let client = lines
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_CLIENT" && s["parent_span_id"] == app_span)
        .unwrap_or_else(|| panic!("no client span under the app's: {lines:#?}"));
    assert_eq!(
        client["resource"]["service.instance.id"], "vm-1",
        "{client}"
    );
    assert_eq!(client["resource"]["service.name"], "weft", "{client}");
    assert_eq!(client["attributes"]["weft.destination"], "app", "{client}");
    assert_eq!(
        client["attributes"]["http.response.status_code"], 200,
        "{client}"
    );
    let server = lines
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_SERVER" && s["parent_span_id"] == client["span_id"])
        .unwrap_or_else(|| panic!("no server span under the client span: {lines:#?}"));
    assert_eq!(
        server["resource"]["service.instance.id"], "vm-2",
        "{server}"
    );
    // The app saw the inbound agent's span as its parent: one trace, nested.
    let server_span = server["span_id"].as_str().unwrap_or_default();
    assert_eq!(seen, format!("00-{trace}-{server_span}-01"), "{server}");
    assert!(
        client["start"].as_u64() <= server["start"].as_u64()
            && server["end"].as_u64() <= client["end"].as_u64(),
        "the server span lies within the client span: {client} {server}"
    );
    eventually("vm-1 counts exported spans", Duration::from_secs(5), || {
        Ok((c.agent("vm-1").metric("weft_spans_exported_total")? >= 1.0).then_some(()))
    })?;
    Ok(())
}

#[test]
fn force_leave_forgets_a_dead_member_everywhere_until_it_returns() -> anyhow::Result<()> {
    let mut c = Cluster::new("force_leave_forgets_a_dead_member_everywhere_until_it_returns");
    c.formed(3)?;
    let listed = |c: &Cluster, on: &str, name: &str| -> anyhow::Result<bool> {
        Ok(c.agent(on).members()?.iter().any(|m| m["name"] == name))
    };

    // An alive member is not forgotten: the command says what to do instead.
    let out = c.agent("vm-1").cli(&["force-leave", "vm-2"]);
    let (_, err) = text(&out);
    assert!(!out.status.success() && err.contains("is alive"), "{err}");

    c.agent_mut("vm-3").kill();
    c.wait_status("vm-1", "vm-3", "failed", Duration::from_secs(20))?;
    // A node's own root cannot forget members for the cluster.
    let out = c.agent("vm-2").cli_as_node(&["force-leave", "vm-3"], &[]);
    assert!(!out.status.success(), "{:?}", text(&out));
    let out = c.agent("vm-1").cli(&["force-leave", "vm-3"]);
    assert!(out.status.success(), "{:?}", text(&out));
    for on in ["vm-1", "vm-2"] {
        eventually(
            &format!("{on} forgets vm-3"),
            Duration::from_secs(15),
            || Ok((!listed(&c, on, "vm-3")?).then_some(())),
        )?;
    }

    // Back with a new generation: listed again, alive.
    c.spawn("vm-3", &[]);
    c.wait_status("vm-1", "vm-3", "alive", Duration::from_secs(30))?;
    Ok(())
}
