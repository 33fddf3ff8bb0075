//! A backend for fault tests, started inside an agent's network namespace:
//! `fault_backend NAME PORT [IP]` serves `hello from NAME` on IP:PORT (default
//! 127.0.0.1) until killed.

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "backend".into());
    let port: u16 = args.next().unwrap_or_else(|| "8080".into()).parse()?;
    let ip = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let _backend = weft_tests::backends::Backend::http_on_ip(&name, &ip, port);
    loop {
        std::thread::park();
    }
}
