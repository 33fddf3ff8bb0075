//! A backend for fault tests, started inside an agent's network namespace:
//! `fault_backend NAME PORT` serves `hello from NAME` on 127.0.0.1:PORT until killed.

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "backend".into());
    let port: u16 = args.next().unwrap_or_else(|| "8080".into()).parse()?;
    let _backend = weft_tests::backends::Backend::http_on(&name, port);
    loop {
        std::thread::park();
    }
}
