//! A local Kafka-protocol broker for development: librdkafka's mock cluster, reachable on a
//! fixed port. The mock cluster listens on random ports; a small forwarder on the fixed port
//! serves bootstrap connections, and clients then follow the addresses the metadata gives.
//!
//! Usage: kafka-dev-broker [--port 9092] [--topic NAME[:PARTITIONS]]...

use std::io;
use std::net::{TcpListener, TcpStream};
use std::thread;

use rdkafka::mocking::MockCluster;

fn main() {
    let mut port: u16 = 9092;
    let mut topics: Vec<(String, i32)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--port" => port = value.parse().unwrap_or_else(|_| usage()),
            "--topic" => {
                let (name, parts) = value.split_once(':').unwrap_or((&value, "3"));
                topics.push((name.to_string(), parts.parse().unwrap_or_else(|_| usage())));
            }
            _ => usage(),
        }
    }

    let cluster = MockCluster::new(1).unwrap_or_else(|e| die(&format!("mock cluster: {e}")));
    for (name, partitions) in &topics {
        cluster
            .create_topic(name, *partitions, 1)
            .unwrap_or_else(|e| die(&format!("topic {name}: {e}")));
    }
    let upstream = cluster.bootstrap_servers();
    let listener = TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| die(&format!("127.0.0.1:{port}: {e}")));
    let names: Vec<&str> = topics.iter().map(|(n, _)| n.as_str()).collect();
    println!(
        "kafka-dev-broker: listening on 127.0.0.1:{port} (mock cluster at {upstream}); topics: {}",
        names.join(", ")
    );

    for client in listener.incoming().flatten() {
        let upstream = upstream.clone();
        thread::spawn(move || {
            if let Ok(server) = TcpStream::connect(&upstream) {
                let _ = forward(client, server);
            }
        });
    }
}

fn forward(client: TcpStream, server: TcpStream) -> io::Result<()> {
    let (mut c_read, mut s_write) = (client.try_clone()?, server.try_clone()?);
    let up = thread::spawn(move || {
        let _ = io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server, client);
    let _ = io::copy(&mut s_read, &mut c_write);
    let _ = c_write.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
    Ok(())
}

fn usage() -> ! {
    die("usage: kafka-dev-broker [--port 9092] [--topic NAME[:PARTITIONS]]...")
}

fn die(message: &str) -> ! {
    eprintln!("kafka-dev-broker: {message}");
    std::process::exit(2)
}
