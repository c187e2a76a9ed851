//! Separate hosts on one machine: every node of a cluster in its own Linux network namespace,
//! with its own address, behind one virtual switch, and silent link cuts between them.
//!
//! # Topology
//! A [`Network`] owns a private `/24` (`10.213.X.0/24`, X chosen so that concurrent runs on the
//! machine do not collide) and these objects, all named after the run's prefix
//! `cachew-<pid>-<k>` (the supervisor's pid and a per-process counter):
//! - the switch: a namespace `<prefix>-sw` holding a bridge `br0`. The bridge lives in a namespace
//!   of its own so the root namespace's firewall (a `FORWARD DROP` policy, `br_netfilter`) never
//!   sees the traffic between nodes;
//! - the uplink: a veth pair, `cw<pid>x<k>` in the root namespace with address `.1`, its peer a
//!   port of the bridge. The supervisor, the status stream and cluster control stay in the root
//!   namespace and reach every node through it;
//! - one host per node: a namespace `<prefix>-<node>` whose `eth0` (address `.2`, `.3`, ...) is
//!   the peer of bridge port `p<i>`. A node bound to that address is reached there, never on
//!   127.0.0.1.
//!
//! # Cuts
//! A cut is a rule of an nftables table `bridge cachew` in the switch namespace, on the bridge's
//! forward hook: matching frames are dropped, as a dead cable or switch would (no RST, no FIN,
//! no ICMP; the node's own stack sees nothing). A node cut both ways has every frame in and out
//! of its port dropped (the uplink included: the supervisor cannot reach it either); one way
//! (`in` or `out`) only the frames towards it or from it; a pair only the frames between two
//! ports. The table is rewritten atomically from the set of cuts after every change.
//!
//! # Clean-up
//! Dropping the [`Network`] deletes the uplink and every namespace (which takes their links and
//! rules with them); the supervisor drops it on normal exit, on error and after SIGINT/SIGTERM.
//! A run killed with SIGKILL leaves its objects behind: [`Network::create`] first removes every
//! `cachew-<pid>-…` namespace and `cw<pid>x…` link whose pid is no longer a live process.
//!
//! Everything needs root (CAP_NET_ADMIN) and the `ip` (iproute2) and `nft` (nftables) tools; a
//! network that cannot be made fails with the reason.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{ClusterError, Result};

/// First two octets of every network's `/24`.
const NET_PREFIX: [u8; 2] = [10, 213];

/// Counter that tells apart the networks of one process (tests run several at once).
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Serialises the choice of subnets between the networks of this process.
static CHOOSING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Which frames of a node a cut drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Everything to and from the node.
    Both,
    /// Frames towards the node: it hears nothing, but what it sends arrives.
    In,
    /// Frames from the node: it hears everything, but nothing it sends arrives.
    Out,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Both => "both",
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One cut in force.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cut {
    /// A node's link.
    Node { node: String, direction: Direction },
    /// The path between two nodes (both ways); each keeps its other links.
    Pair { a: String, b: String },
}

impl Cut {
    fn involves(&self, name: &str) -> bool {
        match self {
            Cut::Node { node, .. } => node == name,
            Cut::Pair { a, b } => a == name || b == name,
        }
    }
}

/// One node's host: its namespace, address and bridge port.
#[derive(Debug, Clone)]
struct Host {
    node: String,
    namespace: String,
    address: Ipv4Addr,
    port: String,
}

/// A private network of hosts (see the module doc). Dropping it removes everything it made.
#[derive(Debug)]
pub struct Network {
    prefix: String,
    uplink: String,
    subnet: u8,
    hosts: Vec<Host>,
    cuts: BTreeSet<Cut>,
    removed: bool,
}

/// Runs a command; its failure is an error with the command line and its stderr.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let line = format!("{program} {}", args.join(" "));
    let mut child = cmd.spawn().map_err(|e| {
        ClusterError::Invalid(format!(
            "cannot run `{line}` ({e}); network = \"hosts\" needs iproute2 and nftables"
        ))
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(ClusterError::Invalid(format!(
            "`{line}` failed: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            if stdin.is_some() {
                format!(" (input: {})", stdin.unwrap_or_default().trim())
            } else {
                String::new()
            }
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run("ip", args, None)
}

/// Whether process `pid` exists.
fn alive(pid: i32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e != Errno::ESRCH,
    }
}

/// The pid in a name `<lead><pid><rest>` whose `<rest>` starts with a non-digit, if any.
fn pid_after(name: &str, lead: &str) -> Option<i32> {
    let rest = name.strip_prefix(lead)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() || rest.len() == digits.len() {
        return None;
    }
    digits.parse().ok()
}

/// Whether the current process may manage network namespaces, with the reason if not.
pub fn check_privilege() -> Result<()> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        return Err(ClusterError::Invalid(format!(
            "network = \"hosts\" needs root (CAP_NET_ADMIN) to create network namespaces, \
             veth pairs and nftables rules; this runs as uid {euid}"
        )));
    }
    ip(&["netns", "list"]).map(drop)?;
    run("nft", &["--version"], None).map(drop)
}

impl Network {
    /// Removes what earlier runs killed with SIGKILL left behind, then makes the switch and
    /// the uplink of a new network.
    pub fn create() -> Result<Network> {
        check_privilege()?;
        remove_leftovers();
        let pid = std::process::id();
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("cachew-{pid}-{k}");
        let uplink = format!("cw{pid}x{k}");
        let _choosing = CHOOSING.lock().unwrap_or_else(|p| p.into_inner());
        let (subnet, held) = free_subnet(pid)?;
        let net = Network {
            prefix,
            uplink,
            subnet,
            hosts: Vec::new(),
            cuts: BTreeSet::new(),
            removed: false,
        };
        // On an error below, the drop removes whatever was made.
        let sw = net.switch();
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        ip(&[
            "link",
            "add",
            &net.uplink,
            "type",
            "veth",
            "peer",
            "name",
            "up0",
            "netns",
            &sw,
        ])?;
        ip(&["-n", &sw, "link", "set", "up0", "master", "br0"])?;
        ip(&["-n", &sw, "link", "set", "up0", "up"])?;
        let gateway = format!("{}/24", net.address_of_index(1));
        ip(&["addr", "add", &gateway, "dev", &net.uplink])?;
        drop(held);
        ip(&["link", "set", &net.uplink, "up"])?;
        net.write_rules()?;
        tracing::info!(prefix = %net.prefix, subnet = %net.gateway(), "network made");
        Ok(net)
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    fn address_of_index(&self, i: u8) -> Ipv4Addr {
        Ipv4Addr::new(NET_PREFIX[0], NET_PREFIX[1], self.subnet, i)
    }

    /// The supervisor's address on the network (the uplink, `.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        self.address_of_index(1)
    }

    /// The run prefix every object's name starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn host(&self, node: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.node == node)
    }

    /// The namespace and address of `node`'s host, made on first use (a restarted node gets
    /// the same ones back).
    pub fn host_for(&mut self, node: &str) -> Result<(String, Ipv4Addr)> {
        if let Some(h) = self.host(node) {
            return Ok((h.namespace.clone(), h.address));
        }
        let index = self.hosts.len() + 2;
        let last = u8::try_from(index)
            .ok()
            .filter(|i| *i < 255)
            .ok_or_else(|| ClusterError::Invalid("a /24 holds at most 253 hosts".into()))?;
        let host = Host {
            node: node.to_string(),
            namespace: format!("{}-{node}", self.prefix),
            address: self.address_of_index(last),
            port: format!("p{index}"),
        };
        let sw = self.switch();
        let ns = host.namespace.clone();
        ip(&["netns", "add", &ns])?;
        // Pushed before the links are made, so a failure below still removes the namespace.
        self.hosts.push(host.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", &sw, "link", "add", &host.port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ])?;
        ip(&["-n", &sw, "link", "set", &host.port, "master", "br0"])?;
        ip(&["-n", &sw, "link", "set", &host.port, "up"])?;
        let address = format!("{}/24", host.address);
        ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        tracing::info!(node, namespace = %ns, address = %host.address, "host made");
        Ok((ns, host.address))
    }

    /// The namespace of `node`, if it has a host.
    pub fn namespace_of(&self, node: &str) -> Option<&str> {
        self.host(node).map(|h| h.namespace.as_str())
    }

    /// The cuts in force.
    pub fn cuts(&self) -> &BTreeSet<Cut> {
        &self.cuts
    }

    /// Puts `cut` in force (its nodes must have hosts).
    pub fn cut(&mut self, cut: Cut) -> Result<()> {
        let nodes: Vec<&str> = match &cut {
            Cut::Node { node, .. } => vec![node],
            Cut::Pair { a, b } => vec![a, b],
        };
        for n in nodes {
            if self.host(n).is_none() {
                return Err(ClusterError::Invalid(format!(
                    "cannot cut {n}: it has no host on this network"
                )));
            }
        }
        tracing::info!(?cut, "cut");
        self.cuts.insert(cut);
        self.write_rules()
    }

    /// Lifts every cut that involves `node` (every cut if `None`).
    pub fn heal(&mut self, node: Option<&str>) -> Result<()> {
        tracing::info!(node = node.unwrap_or("every node"), "heal");
        self.cuts.retain(|c| node.is_some_and(|n| !c.involves(n)));
        self.write_rules()
    }

    /// The nftables script that makes the table hold exactly the current cuts.
    fn rules(&self) -> String {
        let port = |n: &str| self.host(n).map(|h| h.port.clone()).unwrap_or_default();
        let mut rules = Vec::new();
        for cut in &self.cuts {
            match cut {
                Cut::Node { node, direction } => {
                    let p = port(node);
                    if matches!(direction, Direction::Both | Direction::Out) {
                        rules.push(format!("iifname \"{p}\" drop"));
                    }
                    if matches!(direction, Direction::Both | Direction::In) {
                        rules.push(format!("oifname \"{p}\" drop"));
                    }
                }
                Cut::Pair { a, b } => {
                    let (pa, pb) = (port(a), port(b));
                    rules.push(format!("iifname \"{pa}\" oifname \"{pb}\" drop"));
                    rules.push(format!("iifname \"{pb}\" oifname \"{pa}\" drop"));
                }
            }
        }
        let mut script = String::from(
            "table bridge cachew {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n  }\n}\nflush chain bridge cachew forward\n",
        );
        for r in rules {
            script.push_str(&format!("add rule bridge cachew forward {r}\n"));
        }
        script
    }

    fn write_rules(&self) -> Result<()> {
        let sw = self.switch();
        run(
            "ip",
            &["netns", "exec", &sw, "nft", "-f", "-"],
            Some(&self.rules()),
        )
        .map(drop)
    }

    /// Removes every namespace and link of the network (also done on drop).
    pub fn remove(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        let _ = ip(&["link", "del", &self.uplink]);
        for h in &self.hosts {
            if let Err(e) = ip(&["netns", "del", &h.namespace]) {
                tracing::warn!("{e}");
            }
        }
        if let Err(e) = ip(&["netns", "del", &self.switch()]) {
            tracing::warn!("{e}");
        }
        tracing::info!(prefix = %self.prefix, "network removed");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A `10.213.X` not in use by any address of the root namespace, starting from one derived
/// from the pid. Other processes choose under a lock file, so two runs never pick the same.
fn free_subnet(pid: u32) -> Result<(u8, nix::fcntl::Flock<std::fs::File>)> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("cachew-netns.lock"))?;
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| ClusterError::Invalid(format!("cannot lock the subnet choice: {e}")))?;
    let used = ip(&["-o", "-4", "addr", "show"])?;
    let start = (pid % 250) as u8;
    for off in 0..250u8 {
        let x = 1 + (start + off) % 250;
        let needle = format!(" {}.{}.{x}.", NET_PREFIX[0], NET_PREFIX[1]);
        if !used.contains(&needle) {
            // The caller keeps the lock until its uplink has the address, so another process
            // never sees the subnet free in between.
            return Ok((x, held));
        }
    }
    Err(ClusterError::Invalid(
        "no free 10.213.X.0/24 subnet for a network".into(),
    ))
}

/// Removes the namespaces and uplinks of runs whose supervisor is gone (killed with SIGKILL).
pub fn remove_leftovers() {
    if let Ok(list) = ip(&["netns", "list"]) {
        for line in list.lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if let Some(pid) = pid_after(name, "cachew-")
                && !alive(pid)
            {
                tracing::info!(namespace = name, pid, "removing a dead run's namespace");
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(links) = ip(&["-o", "link", "show"]) {
        for line in links.lines() {
            // `14: cw123x0@if3: <...`
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or_default();
            if let Some(pid) = pid_after(name, "cw")
                && !alive(pid)
            {
                tracing::info!(link = name, pid, "removing a dead run's uplink");
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_is_read_only_when_something_follows_it() {
        assert_eq!(pid_after("cachew-123-0-sw", "cachew-"), Some(123));
        assert_eq!(pid_after("cw4194304x12", "cw"), Some(4194304));
        assert_eq!(pid_after("cachew-abc", "cachew-"), None);
        assert_eq!(pid_after("cw123", "cw"), None);
        assert_eq!(pid_after("eth0", "cw"), None);
    }

    #[test]
    fn the_rules_hold_exactly_the_cuts() {
        let mut net = Network {
            prefix: "cachew-1-0".into(),
            uplink: "cw1x0".into(),
            subnet: 7,
            hosts: Vec::new(),
            cuts: BTreeSet::new(),
            removed: true,
        };
        for (i, n) in ["dispatcher", "worker-1", "client-1"].iter().enumerate() {
            net.hosts.push(Host {
                node: n.to_string(),
                namespace: format!("cachew-1-0-{n}"),
                address: net.address_of_index(i as u8 + 2),
                port: format!("p{}", i + 2),
            });
        }
        let base = net.rules();
        assert!(base.contains("flush chain bridge cachew forward"), "{base}");
        assert!(!base.contains("drop"), "{base}");
        net.cuts.insert(Cut::Node {
            node: "worker-1".into(),
            direction: Direction::In,
        });
        net.cuts.insert(Cut::Pair {
            a: "client-1".into(),
            b: "dispatcher".into(),
        });
        let rules = net.rules();
        assert!(rules.contains("forward oifname \"p3\" drop"), "{rules}");
        assert!(!rules.contains("forward iifname \"p3\" drop"), "{rules}");
        assert!(
            rules.contains("iifname \"p4\" oifname \"p2\" drop")
                && rules.contains("iifname \"p2\" oifname \"p4\" drop"),
            "{rules}"
        );
        // Healing one node lifts only its cuts.
        net.cuts.retain(|c| !c.involves("worker-1"));
        assert_eq!(net.cuts.len(), 1);
        assert_eq!(net.gateway(), Ipv4Addr::new(10, 213, 7, 1));
    }
}
