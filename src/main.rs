//! The `originguard` binary: parse arguments, run, map errors to exit statuses
//! (0 ok, 2 usage, 78 configuration, 1 anything else).

use std::process::ExitCode;

use clap::Parser;
use originguard::cli::{Cli, Command, PkiCommand};
use originguard::config::ConfigError;
use originguard::{app, check, demo, pki, signal};

/// EX_CONFIG from sysexits.h.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("originguard: error: {error:#}");
            if error.downcast_ref::<ConfigError>().is_some() {
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
