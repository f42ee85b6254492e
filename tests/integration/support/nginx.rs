//! Debian's nginx (installed by `.ci/run`) as a real peer: started on a config written into the
//! test's directory, stopped on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::WAIT;

/// A running nginx; killed on drop. One process (`master_process off`): a master killed with
/// SIGKILL would leave its workers running, orphaned, holding their sockets.
pub struct Nginx {
    child: std::process::Child,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What shows that nginx is serving.
pub enum Ready<'a> {
    Socket(&'a Path),
    Tcp(SocketAddr),
}

impl Nginx {
    /// Starts nginx in `dir` with one `server { ... }` block (its inside given), and waits until
    /// it serves.
    pub fn start(dir: &Path, server: &str, ready: Ready<'_>) -> Nginx {
        std::fs::create_dir_all(dir).expect("mkdir");
        let d = dir.display();
        let conf = format!(
            "master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             server {{\n{server}\n }}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is installed (apt-get install nginx; .ci/run does it)");
        let child = std::process::Command::new(nginx)
            .args(["-p", &d.to_string(), "-c", path.to_str().expect("utf-8"), "-e"])
            .arg(dir.join("error.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            child,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let up = match ready {
                Ready::Socket(socket) => socket.exists(),
                Ready::Tcp(addr) => std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
            };
            // An nginx that could not bind exits: what answered is then not ours.
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}): {}", nginx.error_log());
            }
            if up && dir.join("nginx.pid").exists() {
                return nginx;
            }
            assert!(Instant::now() < deadline, "nginx did not start: {}", nginx.error_log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

/// A loopback port free right now, for nginx to bind (it cannot be handed a bound socket).
/// Should another test take it in between, nginx exits and `start` says so.
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}
