//! NATS servers with JetStream, clustered on free loopback ports, for the
//! queue-mode tests and fault cases: each server can be killed and
//! started again on its ports and store folder. `nats-server` must be on
//! the `PATH` ([`installed`]).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Whether `nats-server` runs here.
pub fn installed() -> bool {
    Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One server: its configuration file and, while it runs, its process.
#[derive(Debug)]
struct Server {
    conf: PathBuf,
    child: Option<Child>,
}

/// JetStream servers clustered on loopback; killed when dropped.
#[derive(Debug)]
pub struct Cluster {
    servers: Vec<Server>,
    urls: Vec<String>,
}

impl Cluster {
    /// Starts `n` servers (one alone is not clustered), each storing under
    /// `dir/n<i>`.
    pub fn start(n: usize, dir: &Path) -> std::io::Result<Cluster> {
        let ports = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<std::io::Result<Vec<(u16, u16)>>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("\"nats-route://127.0.0.1:{c}\""))
            .collect();
        let mut servers = Vec::new();
        for (i, (port, cluster_port)) in ports.iter().enumerate() {
            let store = dir.join(format!("n{i}"));
            let mut conf = format!(
                "server_name: n{i}\nlisten: \"127.0.0.1:{port}\"\n\
                 jetstream {{ store_dir: \"{}\" }}\n",
                store.display()
            );
            if n > 1 {
                conf.push_str(&format!(
                    "cluster {{ name: piperider, listen: \"127.0.0.1:{cluster_port}\", routes: [{}] }}\n",
                    routes.join(", ")
                ));
            }
            let path = dir.join(format!("n{i}.conf"));
            std::fs::create_dir_all(dir)?;
            std::fs::write(&path, conf)?;
            servers.push(Server {
                conf: path,
                child: None,
            });
        }
        let mut cluster = Cluster {
            servers,
            urls: ports
                .iter()
                .map(|(p, _)| format!("nats://127.0.0.1:{p}"))
                .collect(),
        };
        for i in 0..n {
            cluster.restart(i)?;
        }
        Ok(cluster)
    }

    /// The servers' client URLs.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Server `i` killed with SIGKILL (no shutdown).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Server `i` started (again) on its ports and store folder.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.kill(i);
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.servers[i].conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.servers[i].child = Some(child);
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}
