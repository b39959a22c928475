//! The `tollgate` command line: run, check, demo, token.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use tollgate::app::App;
use tollgate::config::{self, Config, ProviderSettings};
use tollgate::logging::{self, LogFormat};

/// pingora allocates per request and per connection; mimalloc serves that pattern with
/// less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tollgate", version, about = "An authenticating reverse proxy")]
struct Cli {
    /// Log output: JSON lines (default for run) or human-readable text (default for demo).
    #[arg(long, global = true, value_enum, env = "TOLLGATE_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        #[arg(long, env = "TOLLGATE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file, print a summary or every error.
    Check {
        #[arg(long, env = "TOLLGATE_CONFIG")]
        config: PathBuf,
    },
    /// Run loopback stand-ins of the providers, an echo upstream and the gateway in front.
    #[cfg(feature = "demo")]
    Demo,
    /// Log in to one provider once and print the token's lifetime and fingerprint.
    Token {
        #[arg(long, env = "TOLLGATE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        provider: String,
        /// Also print the token itself.
        #[arg(long)]
        show: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => {
            logging::init(cli.log_format.unwrap_or(LogFormat::Json));
            tollgate::memory::keep_resident_set_small();
            load(&config).and_then(|loaded| run(loaded, config))
        }
        Command::Check { config } => return check(&config),
        #[cfg(feature = "demo")]
        Command::Demo => {
            logging::init(cli.log_format.unwrap_or(LogFormat::Text));
            demo()
        }
        Command::Token {
            config,
            provider,
            show,
        } => load(&config).and_then(|config| token(config, &provider, show)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    config::load(path)
        .map_err(|errors| anyhow::anyhow!("invalid config {}:\n{errors}", path.display()))
}

fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    let app = App::build(config)?.reload_from(path);
    app.run()?;
    Ok(())
}

fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            println!("{}: OK", path.display());
            let listen: Vec<String> = config
                .server
                .listen
                .iter()
                .map(ToString::to_string)
                .collect();
            println!(
                "  listen {}, admin {}",
                listen.join(", "),
                config.server.admin
            );
            println!("  {} provider(s):", config.providers.len());
            for provider in &config.providers {
                match provider.per_caller {
                    Some(per_caller) => println!(
                        "    {} ({}, a token per caller, at most {} cached)",
                        provider.name,
                        provider.settings.kind(),
                        per_caller.max_entries
                    ),
                    None => println!("    {} ({})", provider.name, provider.settings.kind()),
                }
            }
            println!("  {} route(s):", config.routes.len());
            for route in &config.routes {
                let upstreams: Vec<String> = route
                    .backends
                    .iter()
                    .map(|b| {
                        format!(
                            "{}://{}{}",
                            if b.tls { "https" } else { "http" },
                            b.authority,
                            b.base_path
                        )
                    })
                    .collect();
                let credential = route
                    .credential
                    .as_ref()
                    .map_or("no credential".to_owned(), |c| {
                        format!("{} from {}", c.header, c.provider)
                    });
                println!(
                    "    {}: {}{} -> {} ({credential})",
                    route.name,
                    route.host.as_deref().unwrap_or("*"),
                    route.path_prefix,
                    upstreams.join(", ")
                );
            }
            if let Some(mcp) = &config.server.mcp {
                println!("  mcp on http://{}{}", mcp.listen, mcp.path);
                println!("  {} tool(s):", config.mcp.tools.len());
                for tool in &config.mcp.tools {
                    println!(
                        "    {}: {} {} via route {} ({})",
                        tool.name, tool.method, tool.upstream_path, tool.route, tool.source
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            for error in &errors.0 {
                eprintln!("  {error}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `tollgate demo`: only in a build with the `demo` feature (the default), not in the
/// container image.
#[cfg(feature = "demo")]
fn demo() -> anyhow::Result<()> {
    use tollgate_standins::stack;

    let config = config::parse(stack::CONFIG)
        .map_err(|errors| anyhow::anyhow!("the built-in demo config is invalid:\n{errors}"))?;
    let app = App::build(config)?;
    let stack = app
        .control()
        .block_on(stack::DemoStack::start())
        .context("starting the demo stand-ins")?;
    // The stand-ins live as long as the process.
    app.control().spawn(async move {
        let _stack = stack;
        std::future::pending::<()>().await
    });
    println!("{}", stack::instructions());
    app.run()?;
    Ok(())
}

fn token(config: Config, name: &str, show: bool) -> anyhow::Result<()> {
    let spec = config
        .providers
        .iter()
        .find(|p| p.name == name)
        .with_context(|| format!("no provider named {name} in the config"))?;
    if spec.per_caller.is_some() {
        anyhow::bail!(
            "provider {name} mints a token per caller, from the token a route's inbound check verified; it has no token of its own to fetch"
        );
    }
    let provider = tollgate::providers::build(spec)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let grant = runtime.block_on(provider.login())?;
    let token = tollgate::tokens::Token::from_grant(0, &grant, &spec.refresh)?;
    let lifetime = token
        .expires_at
        .saturating_duration_since(std::time::Instant::now());
    println!("provider:    {name} ({})", provider_kind(&spec.settings));
    println!(
        "lifetime:    {}s (from {:?})",
        lifetime.as_secs(),
        token.lifetime_source
    );
    println!("fingerprint: {}", token.fingerprint);
    println!(
        "refresh:     {}",
        if grant.refresh_token.is_some() {
            "refresh token issued"
        } else {
            "none"
        }
    );
    if let Some(claims) = tollgate::tokens::jwt_claims(grant.access_token.expose()) {
        println!("claims:      {claims}");
    }
    if show {
        println!("token:       {}", grant.access_token.expose());
    }
    Ok(())
}

fn provider_kind(settings: &ProviderSettings) -> &'static str {
    settings.kind()
}
