//! `soci-snapshotter-grpc`: the containerd remote snapshotter for SOCI lazy loading.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use snapshotter::config::{Config, DEFAULT_CONFIG_PATH};
use snapshotter::serve::{run_daemon, DaemonOptions};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "soci-snapshotter-grpc",
    version,
    about = "containerd remote snapshotter for SOCI lazy loading",
    long_about = "containerd remote snapshotter for SOCI lazy loading.\n\n\
        containerd talks to it as the proxy plugin `soci` (type snapshot) over --address. \
        Ordinary images get overlayfs snapshots like containerd's own snapshotter. For images \
        with a SOCI index, pulled by CRI or `soci image rpull`, each indexed layer is mounted \
        through FUSE and only the parts containers read are fetched. Lazy layers are served \
        by a FUSE manager process that survives restarts of this daemon, so running containers \
        keep working; a small keeper process holds each lazy mount's FUSE connection, so a \
        crash or live upgrade of the manager does not break them either.\n\n\
        Wire-up (containerd config.toml, version 2):\n  \
        [proxy_plugins.soci]\n    type = \"snapshot\"\n    \
        address = \"/run/soci-snapshotter-grpc/soci-snapshotter-grpc.sock\""
)]
struct Cli {
    /// The gRPC socket containerd connects to.
    #[arg(
        long,
        short = 'a',
        default_value = "/run/soci-snapshotter-grpc/soci-snapshotter-grpc.sock"
    )]
    address: PathBuf,
    /// Configuration file (TOML); a missing file at the default path means defaults.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Data root: snapshots, metadata, span cache.
    #[arg(long, default_value = "/var/lib/soci-snapshotter-grpc")]
    root: PathBuf,
    /// Log level (error, warn, info, debug, trace); RUST_LOG wins when set.
    #[arg(long, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the configuration in effect (the defaults merged with --config) as TOML.
    Config,
    /// Unmount every lazily mounted layer and stop the FUSE manager and its keeper (for
    /// uninstalling: containers still using lazy layers lose access to their files).
    Shutdown,
    /// Run the FUSE keeper, which runs the FUSE manager and keeps its mounts alive across
    /// its crashes (started by the daemon; not meant to be run by hand).
    #[command(hide = true)]
    FuseManager,
    /// Serve lazy layers (started by the FUSE keeper; not meant to be run by hand).
    #[command(hide = true)]
    FuseServer,
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(cli) {
        // Typed errors carry their cause in their message too: print each cause once.
        eprintln!("soci-snapshotter-grpc: {}", registry::error_chain(&*e));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let (config_path, required) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let (config, unknown) = Config::load(&config_path, required)?;
    config
        .check()
        .map_err(|e| anyhow::anyhow!("config {}: {e}", config_path.display()))?;
    for key in &unknown {
        tracing::warn!(file = %config_path.display(), "config key {key} is not used by soci-rs; ignored");
    }
    let config_arg = config_path.exists().then(|| config_path.clone());
    let dir = cli.root.join("snapshotter");
    match cli.command {
        Some(Command::Config) => {
            print!(
                "{}",
                toml::to_string_pretty(&config).context("rendering the config")?
            );
            Ok(())
        }
        Some(Command::FuseManager) => {
            let options = snapshotter::fuse_keeper::KeeperOptions {
                exe: std::env::current_exe().context("finding this executable")?,
                root: cli.root,
                config_path: config_arg,
                dir,
            };
            Ok(snapshotter::fuse_keeper::run(&options)?)
        }
        Some(Command::FuseServer) => Ok(snapshotter::manager::run(&cli.root, &dir, config)?),
        Some(Command::Shutdown) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let socket = dir.join(snapshotter::manager::SOCKET_NAME);
            rt.block_on(async {
                match snapshotter::manager::call(&socket, &snapshotter::manager::Request::Shutdown)
                    .await
                {
                    Ok(_) => {
                        eprintln!("FUSE manager stopping; lazy layers unmounted");
                        Ok(())
                    }
                    Err(snapshotter::manager::ManagerError::Unreachable { .. }) => {
                        eprintln!("no FUSE manager running under {}", dir.display());
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                }
            })
        }
        None => {
            let exe = std::env::current_exe().context("finding this executable")?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(run_daemon(
                DaemonOptions {
                    address: cli.address,
                    root: cli.root,
                    config_path: config_arg,
                    exe,
                },
                config,
            ))?)
        }
    }
}
