//! The `originguard` binary: parse arguments, run, map errors to exit statuses
//! (0 ok, 2 usage, 78 configuration, 1 anything else).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use originguard::cli::{
    ApiArgs, ChangeArgs, Cli, CloudflareCommand, Command, HostCertArgs, LevelArgs, PkiCommand, PqCommand,
};
use originguard::config::ConfigError;
use originguard::tls::load::LoadError;
use originguard::tools::{check, cloudflare, demo, loadgen, pki};
use originguard::{app, audit, signal};

/// EX_CONFIG from sysexits.h.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Not eprintln!: it panics when stderr is gone.
            let _ = writeln!(std::io::stderr(), "originguard: error: {error:#}");
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
            let (config, proxy) = app::load(&config)?;
            originguard::logging::init(&config.log);
            runtime()?.block_on(async { app::serve(config, proxy, signal::shutdown()).await })
        }
        Command::Check { config, strict } => {
            let (config, proxy) = app::load(&config)?;
            let policies = &proxy.policies;
            print!("{}", check::describe(&config, policies));
            let now = time::OffsetDateTime::now_utc();
            let mut warnings = audit::config_warnings(&config, now);
            warnings.extend(audit::warnings(policies, now));
            if warnings.is_empty() {
                println!("warnings: none");
            }
            for warning in &warnings {
                println!("warning: {warning}");
            }
            if strict && !warnings.is_empty() {
                anyhow::bail!("{} warning(s) and --strict", warnings.len());
            }
            println!("ok");
            Ok(())
        }
        Command::Demo { listen } => runtime()?.block_on(demo::run(listen)),
        Command::Loadtest(args) => {
            let (json, max_failure_rate) = (args.json, args.max_failure_rate);
            let options = loadgen::Options::try_from(args)?;
            let report = runtime()?.block_on(loadgen::run(options))?;
            match json {
                true => println!("{}", serde_json::to_string(&report)?),
                false => print!("{}", report.text()),
            }
            let failed: u64 = report.failures.values().sum();
            let tried = report.attempts.max(1);
            if failed as f64 / tried as f64 > max_failure_rate {
                anyhow::bail!(
                    "{failed} of {tried} connections failed (more than --max-failure-rate {max_failure_rate})"
                );
            }
            Ok(())
        }
        Command::Cloudflare { command } => runtime()?.block_on(cloudflare_command(command)),
        Command::Pki {
            command:
                PkiCommand::CustomCa {
                    out,
                    key_type,
                    common_name,
                    days,
                },
        } => {
            let ca = pki::write_custom_ca(&out, key_type, &common_name, days)?;
            let ca = std::fs::canonicalize(&ca).unwrap_or(ca);
            println!("wrote {} and {}", ca.display(), out.join("ca.key").display());
            println!("keep ca.key offline; trust the CA in originguard's [client_auth] (or a [hosts.client_auth]):");
            println!("trust = [\"{}\"]", ca.display());
            Ok(())
        }
        Command::Pki {
            command:
                PkiCommand::Client {
                    ca,
                    out,
                    key_type,
                    common_name,
                    days,
                },
        } => {
            pki::write_client(&ca, &out, key_type, &common_name, days)?;
            let ca_pem = std::fs::canonicalize(ca.join("ca.pem")).unwrap_or_else(|_| ca.join("ca.pem"));
            println!(
                "wrote {} and {}",
                out.join("client.pem").display(),
                out.join("client.key").display()
            );
            println!("upload them to Cloudflare (originguard cloudflare enable --zone-cert ... or --hostname ...);");
            println!("originguard must trust their CA first:");
            println!("trust = [\"{}\"]", ca_pem.display());
            Ok(())
        }
        Command::Pki {
            command: PkiCommand::TicketKeys { out, keep },
        } => {
            let n = originguard::tls::tickets::rotate(&out, keep)?;
            println!(
                "wrote {} ({n} key(s), the new one first); reload every replica",
                out.display()
            );
            Ok(())
        }
        Command::Pki {
            command: PkiCommand::Dev { out, days, force },
        } => {
            pki::write_dev(&out, days, force)?;
            println!("wrote a development PKI to {} (NOT for production):", out.display());
            for file in pki::DEV_FILES {
                println!("  {}", out.join(file).display());
            }
            Ok(())
        }
    }
}

async fn cloudflare_command(command: CloudflareCommand) -> anyhow::Result<()> {
    let session = |api: &ApiArgs, change: Option<&ChangeArgs>| -> anyhow::Result<cloudflare::Session> {
        let dry_run = change.is_some_and(|c| c.dry_run);
        Ok(cloudflare::Session {
            api: cloudflare::Api::new(&api.api_base, std::env::var("CLOUDFLARE_API_TOKEN").ok(), dry_run)?,
            zone: api.zone.clone(),
            json: api.json,
            wait: change.map_or(std::time::Duration::ZERO, |c| c.wait),
            poll_interval: change.map_or(std::time::Duration::ZERO, |c| c.poll_interval),
        })
    };
    let level = |l: &LevelArgs, c: Option<&HostCertArgs>| -> anyhow::Result<cloudflare::Level> {
        let pair = |cert: &Option<std::path::PathBuf>, key: &Option<std::path::PathBuf>| match (cert, key) {
            (Some(c), Some(k)) => Ok(Some((c.clone(), k.clone()))),
            (None, None) => Ok(None),
            _ => Err(anyhow::anyhow!("--cert and --key go together")),
        };
        Ok(match (&l.zone_cert, &l.hostname) {
            _ if l.global => cloudflare::Level::Global,
            (Some(files), _) => cloudflare::Level::Zone(Some((files[0].clone(), files[1].clone()))),
            (None, Some(hostname)) => match c {
                Some(c) => cloudflare::Level::Hostname(hostname.clone(), pair(&c.cert, &c.key)?),
                None => cloudflare::Level::Hostname(hostname.clone(), None),
            },
            (None, None) => cloudflare::Level::Zone(None),
        })
    };
    match command {
        CloudflareCommand::Pq {
            command: PqCommand::Status { api },
        } => cloudflare::pq(&session(&api, None)?, None).await,
        CloudflareCommand::Pq {
            command: PqCommand::Set { value, api, change },
        } => cloudflare::pq(&session(&api, Some(&change))?, Some(value)).await,
        CloudflareCommand::Ips { out, json, api_base } => {
            cloudflare::ips(&cloudflare::Api::anonymous(&api_base)?, out.as_deref(), json).await
        }
        CloudflareCommand::Status { api, hostname } => cloudflare::status(&session(&api, None)?, &hostname).await,
        CloudflareCommand::Enable {
            api,
            change,
            level: l,
            host_cert,
            guard,
        } => {
            cloudflare::enable(
                &session(&api, Some(&change))?,
                &level(&l, Some(&host_cert))?,
                &guard.config,
                guard.force,
            )
            .await
        }
        CloudflareCommand::Disable { api, change, level: l } => {
            cloudflare::disable(&session(&api, Some(&change))?, &level(&l, None)?).await
        }
        CloudflareCommand::Rotate {
            api,
            change,
            cert,
            key,
            hostname,
            guard,
        } => {
            cloudflare::rotate(
                &session(&api, Some(&change))?,
                hostname.as_deref(),
                &cert,
                &key,
                &guard.config,
                guard.force,
            )
            .await
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
