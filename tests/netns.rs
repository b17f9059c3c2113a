//! A two-host network lab in network namespaces, for fault tests (root only).
//!
//! ```text
//!   ns SERVER                           ns CLIENT
//!   198.18.0.1/24 (veth) ------------- 198.18.0.2/24 (veth)   faults are applied here
//!   198.18.1.1/24 (veth) --+
//!                          |
//!   root ns (the test)  198.18.1.2/24   the test reaches /healthz and /metrics here
//! ```
//! Faults use nftables in the client namespace (this kernel has no `tc netem`): a full
//! cut (drop everything but loopback), UDP blocked except to one port, and a roam (the
//! client's address replaced by another). Everything is deleted on drop, also when the
//! test fails.

use std::process::Command;

/// Server side address on the shared link.
pub const SERVER_IP: &str = "198.18.0.1";
/// Client address before a roam.
pub const CLIENT_IP: &str = "198.18.0.2";
/// Client address after a roam.
pub const ROAMED_IP: &str = "198.18.0.3";
/// Server address as the root namespace (the test) sees it.
pub const SERVER_MGMT_IP: &str = "198.18.1.1";

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs an nftables script (`nft -f -`), in network namespace `ns` if given; the error
/// is nft's.
pub fn nft(ns: Option<&str>, script: &str) -> Result<(), String> {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nft"]);
            c
        }
        None => Command::new("nft"),
    };
    let mut child = cmd
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Whether this machine can run namespace tests. When it cannot, the test prints why
/// and skips, except under `CI=true`, where it fails: CI runs as root with the tools.
pub fn available() -> bool {
    let why = if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    {
        Some("not running as root")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("iproute2 (ip) is not installed")
    } else if Command::new("nft").arg("--version").output().is_err() {
        Some("nftables (nft) is not installed")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            assert!(
                !crate::under_ci(),
                "namespace tests must run in CI, but {why}"
            );
            println!("SKIPPED: namespace test needs root, ip and nft: {why}");
            false
        }
    }
}

/// Two namespaces joined by a veth pair, plus a management link to the root namespace.
pub struct Lab {
    /// Server namespace name.
    pub server_ns: String,
    /// Client namespace name.
    pub client_ns: String,
    mgmt_if: String,
    faulted: std::sync::Mutex<bool>,
}

impl Lab {
    /// Builds the lab (names unique per process and lab).
    pub fn create() -> Lab {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}{n}", std::process::id() % 100_000);
        let lab = Lab {
            server_ns: format!("rgs{id}"),
            client_ns: format!("rgc{id}"),
            mgmt_if: format!("rgm{id}"),
            faulted: std::sync::Mutex::new(false),
        };
        lab.build()
            .unwrap_or_else(|e| panic!("building the namespace lab: {e}"));
        lab
    }

    fn build(&self) -> Result<(), String> {
        let (s, c) = (self.server_ns.as_str(), self.client_ns.as_str());
        let link_s = format!("{}a", self.mgmt_if);
        let link_c = format!("{}b", self.mgmt_if);
        let mgmt_s = format!("{}s", self.mgmt_if);
        run(&["ip", "netns", "add", s])?;
        run(&["ip", "netns", "add", c])?;
        run(&[
            "ip", "link", "add", &link_s, "type", "veth", "peer", "name", &link_c,
        ])?;
        run(&["ip", "link", "set", &link_s, "netns", s])?;
        run(&["ip", "link", "set", &link_c, "netns", c])?;
        run(&[
            "ip",
            "-n",
            s,
            "addr",
            "add",
            &format!("{SERVER_IP}/24"),
            "dev",
            &link_s,
        ])?;
        run(&[
            "ip",
            "-n",
            c,
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            &link_c,
        ])?;
        run(&[
            "ip",
            "link",
            "add",
            &self.mgmt_if,
            "type",
            "veth",
            "peer",
            "name",
            &mgmt_s,
        ])?;
        run(&["ip", "link", "set", &mgmt_s, "netns", s])?;
        run(&[
            "ip",
            "-n",
            s,
            "addr",
            "add",
            &format!("{SERVER_MGMT_IP}/24"),
            "dev",
            &mgmt_s,
        ])?;
        run(&["ip", "addr", "add", "198.18.1.2/24", "dev", &self.mgmt_if])?;
        for (ns, dev) in [
            (s, link_s.as_str()),
            (c, link_c.as_str()),
            (s, mgmt_s.as_str()),
        ] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        // A roam adds the new address before removing the old: without this, removing
        // the primary address of a subnet deletes the secondary (new) one with it.
        for key in ["all", "default", link_c.as_str()] {
            run(&[
                "ip",
                "netns",
                "exec",
                c,
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{key}.promote_secondaries=1"),
            ])?;
        }
        run(&["ip", "-n", s, "link", "set", "lo", "up"])?;
        run(&["ip", "-n", c, "link", "set", "lo", "up"])?;
        run(&["ip", "link", "set", &self.mgmt_if, "up"])?;
        Ok(())
    }

    /// The client-side link's name.
    pub fn client_if(&self) -> String {
        format!("{}b", self.mgmt_if)
    }

    fn nft(&self, script: &str) -> Result<(), String> {
        nft(Some(&self.client_ns), script)
    }

    /// Drops all of the client's traffic (a dead path: Wi-Fi gone, cable pulled).
    pub fn cut(&self) {
        self.nft(
            "table inet roger_fault {
               chain in { type filter hook input priority 0; policy accept; iifname != \"lo\" drop; }
               chain out { type filter hook output priority 0; policy accept; oifname != \"lo\" drop; }
             }",
        )
        .expect("nft cut");
        *self.faulted.lock().expect("faulted") = true;
    }

    /// Blocks the client's UDP except to and from `port` (a firewall that lets only TURN
    /// through).
    pub fn block_udp_except(&self, port: u16) {
        self.nft(&format!(
            "table inet roger_fault {{
               chain in {{ type filter hook input priority 0; policy accept; iifname != \"lo\" udp sport != {port} drop; }}
               chain out {{ type filter hook output priority 0; policy accept; oifname != \"lo\" udp dport != {port} drop; }}
             }}"
        ))
        .expect("nft udp block");
        *self.faulted.lock().expect("faulted") = true;
    }

    /// Drops `percent` % of the client's incoming UDP at random (packet loss).
    pub fn lose_incoming_udp(&self, percent: u32) {
        self.nft(&format!(
            "table inet roger_fault {{
               chain in {{ type filter hook input priority 0; policy accept; iifname != \"lo\" meta l4proto udp numgen random mod 100 < {percent} drop; }}
             }}"
        ))
        .expect("nft loss");
        *self.faulted.lock().expect("faulted") = true;
    }

    /// Removes the fault.
    pub fn restore(&self) {
        let mut f = self.faulted.lock().expect("faulted");
        if *f {
            self.nft("delete table inet roger_fault")
                .expect("nft restore");
            *f = false;
        }
    }

    /// Moves the client to a new address (a roam): the new one is added, the old removed.
    pub fn roam(&self) {
        self.readdress(CLIENT_IP, ROAMED_IP);
    }

    /// Replaces the client's address `from` with `to` (add first, then remove).
    pub fn readdress(&self, from: &str, to: &str) {
        let c = self.client_ns.as_str();
        let dev = self.client_if();
        let (to, from) = (format!("{to}/24"), format!("{from}/24"));
        run(&["ip", "-n", c, "addr", "add", &to, "dev", &dev]).expect("add new address");
        run(&["ip", "-n", c, "addr", "del", &from, "dev", &dev]).expect("remove old address");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.mgmt_if]);
        // Deleting a namespace deletes its veth ends; processes in it are the tests' to
        // kill (they are, by the Server/Bot drops that run before this).
        let _ = run(&["ip", "netns", "del", &self.server_ns]);
        let _ = run(&["ip", "netns", "del", &self.client_ns]);
    }
}
