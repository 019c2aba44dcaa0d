//! A TCP relay standing in for the network between two servers, so a test can
//! partition them and heal the partition. Bytes are forwarded untouched (TLS
//! passes through end to end); cutting the link closes every open connection
//! and refuses new ones until it is healed.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

pub struct Link {
    /// Where the relay listens: point a server's override here.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    open: AtomicBool,
    target: Mutex<Option<SocketAddr>>,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl Link {
    /// A relay on a free loopback port; it forwards nothing until
    /// [`Link::connect_to`] names its target.
    pub async fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let shared = Arc::new(Shared {
            open: AtomicBool::new(true),
            ..Shared::default()
        });
        let acceptor = tokio::spawn(accept(listener, shared.clone()));
        Link {
            addr,
            shared,
            acceptor,
        }
    }

    pub fn connect_to(&self, target: SocketAddr) {
        *self.shared.target.lock().expect("relay lock") = Some(target);
    }

    /// Partitions: open connections are dropped, new ones are refused.
    pub fn cut(&self) {
        self.shared.open.store(false, Ordering::SeqCst);
        for task in self
            .shared
            .connections
            .lock()
            .expect("relay lock")
            .drain(..)
        {
            task.abort();
        }
    }

    pub fn heal(&self) {
        self.shared.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let target = *shared.target.lock().expect("relay lock");
        let (true, Some(target)) = (shared.open.load(Ordering::SeqCst), target) else {
            continue; // dropped: the peer sees the connection closed
        };
        let task = tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
        let mut connections = shared.connections.lock().expect("relay lock");
        connections.retain(|t| !t.is_finished());
        connections.push(task);
    }
}
