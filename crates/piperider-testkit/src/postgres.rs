//! A PostgreSQL primary and a streaming replica of it, made with the
//! installed server's own tools (`initdb`, `pg_ctl`, `pg_basebackup`) in a
//! folder of the test's on free loopback ports: the read-replica tests
//! need replication, which the shared server on 127.0.0.1:5432 does not
//! offer. PostgreSQL refuses to run as root, so as root the tools run as
//! the `postgres` user (`runuser`), which then owns the clusters' folder.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The folder of the server's tools: `PIPERIDER_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout), else the folder
/// of an `initdb` on the `PATH`.
pub fn tools() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PIPERIDER_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| dir.join("initdb").exists()))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A primary and its streaming replica (hot standby); both are stopped
/// when this is dropped.
#[derive(Debug)]
pub struct Replicated {
    tools: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
    primary_port: u16,
    replica_port: u16,
}

impl Replicated {
    /// Makes the primary under `dir/primary`, starts it, copies it with
    /// `pg_basebackup` into `dir/replica` as a streaming standby and
    /// starts that. `tools` is the folder of [`tools`].
    pub fn start(tools: &Path, dir: &Path) -> std::io::Result<Replicated> {
        let as_postgres = is_root();
        let dir = dir.join("clusters");
        std::fs::create_dir_all(&dir)?;
        let cluster = Replicated {
            tools: tools.to_path_buf(),
            as_postgres,
            primary_port: free_port()?,
            replica_port: free_port()?,
            dir,
        };
        if as_postgres {
            // The test's folder is the root's own (mode 0700): let the server's user through.
            use std::os::unix::fs::PermissionsExt;
            if let Some(parent) = cluster.dir.parent() {
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))?;
            }
            run(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&cluster.dir))?;
        }
        let primary = cluster.dir.join("primary");
        cluster.tool(
            "initdb",
            &[
                "-D".as_ref(),
                primary.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        cluster.configure(&primary, cluster.primary_port)?;
        cluster.pg_ctl(&primary, "start")?;
        let replica = cluster.dir.join("replica");
        let port = cluster.primary_port.to_string();
        cluster.tool(
            "pg_basebackup",
            &[
                "-h".as_ref(),
                "127.0.0.1".as_ref(),
                "-p".as_ref(),
                port.as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-D".as_ref(),
                replica.as_os_str(),
                // standby.signal and the primary's address: a streaming standby.
                "--write-recovery-conf".as_ref(),
                "--wal-method=stream".as_ref(),
                "--checkpoint=fast".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        cluster.configure(&replica, cluster.replica_port)?;
        cluster.pg_ctl(&replica, "start")?;
        Ok(cluster)
    }

    /// Appends the settings of a small test server listening on `port`.
    fn configure(&self, data: &Path, port: u16) -> std::io::Result<()> {
        let mut conf = OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        writeln!(
            conf,
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 60\nshared_buffers = 32MB\nfsync = off\nwal_level = replica\n\
             max_wal_senders = 4\nhot_standby = on",
            self.dir.display()
        )
    }

    fn tool(&self, name: &str, args: &[&std::ffi::OsStr]) -> std::io::Result<()> {
        let program = self.tools.join(name);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        run(command.args(args))
    }

    fn pg_ctl(&self, data: &Path, action: &str) -> std::io::Result<()> {
        let log = data.with_extension("log");
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "-D".as_ref(),
            data.as_os_str(),
            "-l".as_ref(),
            log.as_os_str(),
            "-w".as_ref(),
            "-t".as_ref(),
            "60".as_ref(),
        ];
        if action == "stop" {
            args.push("-m".as_ref());
            args.push("immediate".as_ref());
        }
        args.push(action.as_ref());
        self.tool("pg_ctl", &args)
    }

    /// The URL of database `db` on the primary.
    pub fn primary_url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.primary_port)
    }

    /// The URL of database `db` on the replica.
    pub fn replica_url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.replica_port)
    }

    /// Stops the replica at once (as a crash would).
    pub fn stop_replica(&self) -> std::io::Result<()> {
        self.pg_ctl(&self.dir.join("replica"), "stop")
    }

    /// Starts the replica again.
    pub fn start_replica(&self) -> std::io::Result<()> {
        self.pg_ctl(&self.dir.join("replica"), "start")
    }
}

impl Drop for Replicated {
    fn drop(&mut self) {
        for data in ["replica", "primary"] {
            let data = self.dir.join(data);
            if data.join("postmaster.pid").exists() {
                let _ = self.pg_ctl(&data, "stop");
            }
        }
    }
}

/// Runs `command`; an error carries its output when it fails.
fn run(command: &mut Command) -> std::io::Result<()> {
    let out = command.output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "{command:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}
