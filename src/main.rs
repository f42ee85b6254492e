//! The `originguard` binary: parse arguments, run, map errors to exit statuses
//! (0 ok, 2 usage, 78 configuration, 1 anything else).

use std::process::ExitCode;

use clap::Parser;
use originguard::cli::{Cli, Command, PkiCommand};
use originguard::config::ConfigError;
use originguard::tls::load::LoadError;
use originguard::{app, check, config, demo, loadgen, pki, signal};

/// EX_CONFIG from sysexits.h.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("originguard: error: {error:#}");
            if error.downcast_ref::<ConfigError>().is_some() || error.downcast_ref::<LoadError>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            let (config, policies) = app::load(&config)?;
            app::init_logging(&config.log);
            runtime()?.block_on(async { app::serve(config, policies, signal::shutdown()).await })
        }
        Command::Check { config } => {
            let (config, policies) = app::load(&config)?;
            print!("{}", check::describe(&config, &policies));
            let warnings = check::warnings(&policies, time::OffsetDateTime::now_utc());
            if warnings.is_empty() {
                println!("warnings: none");
            }
            for warning in warnings {
                println!("warning: {warning}");
            }
            println!("ok");
            Ok(())
        }
        Command::Demo { listen } => runtime()?.block_on(demo::run(listen)),
        Command::Loadtest(args) => {
            let duration = config::parse_duration(&args.duration).map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
            let json = args.json;
            let options = loadgen::Options {
                target: args.target,
                server_name: args.server_name,
                ca: args.ca,
                cert: args.cert,
                key: args.key,
                connections: args.connections,
                duration: match args.handshakes {
                    // A count-bounded run still stops eventually.
                    Some(_) => std::time::Duration::from_secs(24 * 3600),
                    None => duration,
                },
                handshakes: args.handshakes,
                resume: args.resume,
                requests_per_connection: args.requests_per_connection,
                path: args.path,
                post_quantum: args.post_quantum,
                hold: args.hold,
                progress: !json,
            };
            let report = runtime()?.block_on(loadgen::run(options))?;
            match json {
                true => println!("{}", serde_json::to_string(&report)?),
                false => print!("{}", report.text()),
            }
            Ok(())
        }
        Command::Pki {
            command: PkiCommand::Dev { out, days },
        } => {
            pki::write_dev(&out, days)?;
            println!("wrote a development PKI to {} (NOT for production):", out.display());
            for file in pki::DEV_FILES {
                println!("  {}", out.join(file).display());
            }
            Ok(())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
