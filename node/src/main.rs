//! The `weft` binary: parses the command line and runs the agent or a client command.

use std::process::ExitCode;

use clap::Parser as _;
use weft_node::cli::{
    client, Cli, Command, GossipKeyAction, NodeAction, ServiceAction, TokenAction,
};
use weft_node::config::{LogFormat, Settings};

fn init_logs(format: LogFormat, verbose: bool) {
    let default = if verbose {
        "debug,quinn=info,rustls=info,chitchat=info,sled=info,hyper=info"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Agent(_) | Command::Demo { .. }) {
        // `weft members --json | head`: end quietly when the reader goes away, as other
        // Unix tools do, instead of panicking on the broken pipe. (The agent keeps
        // SIGPIPE ignored: its sockets report EPIPE as errors.)
        sigpipe::reset();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weft: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        match cli.command {
            Command::Agent(args) => {
                let settings = Settings::resolve(&args)?;
                init_logs(settings.log_format, settings.dev);
                weft_node::agent::run(*args, settings).await?;
                Ok(())
            }
            Command::Members(a) if a.prune => weft_node::cli::config_cmd::prune(&a.client).await,
            Command::Members(a) => client::members(&a.client).await,
            Command::ForceLeave { node, client: c } => {
                weft_node::cli::config_cmd::force_leave(&c, &node).await
            }
            Command::Status(c) => weft_node::cli::status_cmd::status(&c).await,
            Command::Doctor(c) => weft_node::cli::status_cmd::doctor(&c).await,
            Command::Token {
                action: TokenAction::Create { ttl, client: c },
            } => client::token_create(&c, &ttl).await,
            Command::Node {
                action:
                    NodeAction::Revoke {
                        name,
                        no_rotate,
                        client: c,
                    },
            } => client::node_revoke(&c, &name, !no_rotate).await,
            Command::GossipKey { action } => match action {
                GossipKeyAction::List(c) => client::gossip_keys(&c).await,
                GossipKeyAction::Install { key, client: c } => {
                    let key = key.unwrap_or_else(client::new_gossip_key);
                    client::gossip_key_op(&c, serde_json::json!({"op": "install", "key": key}))
                        .await
                }
                GossipKeyAction::Use { id, client: c } => {
                    client::gossip_key_op(&c, serde_json::json!({"op": "use", "id": id})).await
                }
                GossipKeyAction::Remove { id, client: c } => {
                    client::gossip_key_op(&c, serde_json::json!({"op": "remove", "id": id})).await
                }
            },
            Command::Leave(c) => client::leave(&c).await,
            Command::Services(c) => client::services(&c).await,
            Command::Config { action } => weft_node::cli::config_cmd::config(&action).await,
            Command::Route { action } => weft_node::cli::config_cmd::route(&action).await,
            Command::Policy { action } => weft_node::cli::config_cmd::policy(&action).await,
            Command::Rollout { action } => weft_node::cli::rollout_cmd::rollout(&action).await,
            Command::Dns { action } => weft_node::cli::dns_cmd::dns(&action),
            Command::Operator { action } => client::operator(&action).await,
            Command::Ca { action } => weft_node::cli::ca_cmd::ca(&action).await,
            Command::Audit { limit, client: c } => client::audit(&c, limit).await,
            Command::Validate(a) => weft_node::cli::validate_cmd::validate(&a).await,
            Command::Completions { shell } => {
                let mut cmd = <weft_node::cli::Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut cmd, "weft", &mut std::io::stdout());
                Ok(())
            }
            Command::Man => {
                let cmd = <weft_node::cli::Cli as clap::CommandFactory>::command();
                clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
                Ok(())
            }
            Command::Demo { tour } => {
                init_logs(LogFormat::Human, false);
                weft_node::demo::run(tour).await
            }
            Command::Service {
                action: ServiceAction::Register(a),
            } => client::service_register(&a).await,
            Command::Service {
                action: ServiceAction::Deregister { name, client: c },
            } => client::service_deregister(&c, &name).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: many errors already say their
/// cause in their own message, so a cause that the text so far contains is not repeated.
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}
