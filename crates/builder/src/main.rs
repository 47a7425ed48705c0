//! `soci-index-builder`: builds and publishes a SOCI index for every image pushed to a
//! registry that notifies it (CNCF distribution's `notifications.endpoints`).

use anyhow::{bail, Context, Result};
use builder::api::ServiceClient;
use builder::backfill::{self, Sink};
use builder::config::{Config, DEFAULT_CONFIG};
use builder::queue::{self, Job, JobState, Queue};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;

/// Index every image pushed to a registry: a webhook service for registry notifications that
/// creates and pushes SOCI indexes (v1, as `soci push`) or SOCI-enabled images (v2, as
/// `soci convert`), with a persistent, deduplicated work queue.
#[derive(Parser, Debug)]
#[command(name = "soci-index-builder", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives such as
    /// "info,registry=debug".
    #[arg(long, default_value = "info", global = true, env = "SOCI_BUILDER_LOG")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service: receive notifications on POST /events, index in the background.
    Serve {
        /// Configuration file (TOML; `soci-index-builder config` prints a commented default).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Print a commented default configuration.
    Config,
    /// List recent jobs: asks the running service, or reads the queue database when no
    /// service answers.
    Status {
        /// Configuration file (gives the service address, secret and state_dir).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// State directory holding queue.redb (overrides the configuration's state_dir; enough
        /// on its own when no service runs).
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        /// Only jobs in this state.
        #[arg(long, value_name = "STATE", value_parser = ["queued", "running", "retry_wait", "done", "skipped", "failed"])]
        filter: Option<String>,
        /// At most this many jobs, most recently updated first.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the jobs as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Queue every image of matching repositories that has no index yet.
    Backfill {
        /// Configuration file (filters, publish mode, registry credentials, service address).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// `<registry>/<repository glob>`, e.g. `127.0.0.1:5000/team/*` or `registry/**`
        /// ('*' stays within one path component, '**' crosses them).
        target: String,
        /// List what would be queued without queuing anything.
        #[arg(long)]
        dry_run: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn init_logs(format: LogFormat, level: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("--log-level {level:?} is not a level or filter"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logs(cli.log_format, &cli.log_level) {
        eprintln!("soci-index-builder: {e:#}");
        return std::process::ExitCode::from(2);
    }
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soci-index-builder: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Config => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            let rt = runtime()?;
            let served = rt.block_on(builder::worker::serve(config));
            // A layer being indexed on a blocking thread is abandoned rather than waited for:
            // its job is still `running` in the queue and runs again at the next start.
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
            Ok(served?)
        }
        Command::Status {
            config,
            state,
            filter,
            limit,
            json,
        } => status(config, state, filter, limit, json),
        Command::Backfill {
            config,
            target,
            dry_run,
            json,
        } => {
            let config = Config::load(&config)?;
            runtime()?.block_on(run_backfill(config, &target, dry_run, json))
        }
    }
}

fn status(
    config: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    filter: Option<String>,
    limit: usize,
    json: bool,
) -> Result<()> {
    let filter = filter.as_deref().and_then(JobState::parse);
    let config = config.map(|c| Config::load(&c)).transpose()?;
    let mut jobs: Option<Vec<Job>> = None;
    let mut source = String::new();
    if let Some(c) = &config {
        let client = ServiceClient::from_config(c)?;
        jobs = runtime()?.block_on(client.list_jobs(filter, limit))?;
        source = format!("service at {}", client.url());
    }
    let jobs = match jobs {
        Some(j) => j,
        None => {
            let dir = state_dir
                .or_else(|| config.as_ref().map(|c| c.state_dir.clone()))
                .context("no service answered and no state directory is known: pass --config FILE or --state DIR")?;
            let path = dir.join("queue.redb");
            if !path.exists() {
                bail!(
                    "{} does not exist: no job was ever queued there",
                    path.display()
                );
            }
            source = format!("database {} (no service answered)", path.display());
            queue::list_read_only(&path, filter, limit)?
        }
    };
    // On stderr, so that `--json` output stays parseable.
    eprintln!("jobs from the {source}");
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &jobs)?;
        writeln!(out)?;
        return Ok(());
    }
    if jobs.is_empty() {
        eprintln!("no jobs");
        return Ok(());
    }
    let rows: Vec<[String; 7]> = jobs
        .iter()
        .map(|j| {
            [
                format_time(j.updated_ms),
                j.state.as_str().to_owned(),
                j.spec.repository.clone(),
                j.spec.tag.clone().unwrap_or_else(|| "-".to_owned()),
                queue::short(&j.spec.digest),
                j.attempts.to_string(),
                j.result_line(),
            ]
        })
        .collect();
    let header = [
        "UPDATED",
        "STATE",
        "REPOSITORY",
        "TAG",
        "DIGEST",
        "ATTEMPTS",
        "RESULT",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()).take(6) {
            *w = (*w).max(c.chars().count());
        }
    }
    let print_row = |out: &mut dyn Write, cells: &[&str]| -> std::io::Result<()> {
        let mut line = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i < 6 {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            } else {
                line.push_str(c);
            }
        }
        writeln!(out, "{}", line.trim_end())
    };
    print_row(&mut out, &header)?;
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        print_row(&mut out, &cells)?;
    }
    Ok(())
}

fn format_time(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => ms.to_string(),
    }
}

async fn run_backfill(config: Config, target: &str, dry_run: bool, json: bool) -> Result<()> {
    let registry_client = config.registry_client()?;
    let service = ServiceClient::from_config(&config)?;
    let mut queue_db: Option<Queue> = None;
    let sink = if dry_run {
        eprintln!("dry run: nothing is queued");
        Sink::DryRun
    } else if service.is_up().await {
        eprintln!("queuing through the running service at {}", service.url());
        Sink::Service(&service)
    } else {
        let path = config.db_path();
        eprintln!(
            "no service answers at {}: queuing straight into {}",
            service.url(),
            path.display()
        );
        let v2 = matches!(config.publish, indexer::Publish::V2 { .. });
        queue_db = Some(Queue::open(&path, v2)?);
        match &queue_db {
            Some(q) => Sink::Database(q),
            None => Sink::DryRun,
        }
    };
    let summary = backfill::backfill(&config, &registry_client, target, &sink, |l| {
        if !json {
            println!("{l}");
        }
    })
    .await?;
    drop(queue_db);
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{} repositories, {} tags seen: {} queued, {} already indexed, {} deduplicated, {} own artifacts, {} filtered, {} skipped, {} errors",
            summary.repositories,
            summary.tags_seen,
            summary.queued,
            summary.already_indexed,
            summary.deduplicated,
            summary.own_artifacts,
            summary.filtered,
            summary.skipped,
            summary.errors
        );
    }
    if summary.errors > 0 {
        bail!("{} tag(s) could not be checked (see above)", summary.errors);
    }
    Ok(())
}
