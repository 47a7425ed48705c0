//! A TCP proxy that adds a fixed delay to each direction: the "extra round-trip latency" of
//! the benchmark link (this kernel has no `netem`). Every chunk read from one side is written
//! to the other no earlier than `delay` after it arrived, in order; the chunks in flight are
//! queued rather than waited for one by one, so the link's throughput is kept and only its
//! latency grows (a round trip gains twice the delay).
//!
//! Usage: delay-proxy --listen ADDR --to ADDR --delay-ms N
//! Runs until killed (the harness kills it with the namespace it runs in).

use anyhow::{Context, Result};
use clap::Parser;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "TCP proxy adding a fixed one-way delay in each direction")]
struct Args {
    /// Address to accept connections on.
    #[arg(long)]
    listen: String,
    /// Address to forward them to.
    #[arg(long)]
    to: String,
    /// Delay added to each direction, in milliseconds (the round trip gains twice this).
    #[arg(long)]
    delay_ms: u64,
}

/// Chunks read but not yet due; bounds the proxy's memory when the far side is slow.
const QUEUED_CHUNKS: usize = 1024;

/// Copies `from` to `to`, each chunk held until `delay` after it was read.
async fn delayed_copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUED_CHUNKS);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        // A read error is the peer going away: end this direction like an EOF.
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .await
                    .is_err()
            {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

async fn serve(client: TcpStream, target: String, delay: Duration) {
    let upstream = match TcpStream::connect(&target).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("delay-proxy: connecting to {target}: {e}");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    tokio::join!(
        delayed_copy(client_read, upstream_write, delay),
        delayed_copy(upstream_read, client_write, delay),
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let delay = Duration::from_millis(args.delay_ms);
    loop {
        let (client, _) = listener.accept().await.context("accepting a connection")?;
        tokio::spawn(serve(client, args.to.clone(), delay));
    }
}
