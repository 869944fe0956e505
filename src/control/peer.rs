//! Who may use the control socket: root, the daemon's own user, and the
//! members of `[gateway] operator_group`. The peer's uid and gid come from
//! the kernel (`SO_PEERCRED`, through tokio's `peer_cred`), not from
//! anything the client says.
//!
//! Group membership is read from `/etc/group` (and the peer's user name
//! from `/etc/passwd`) at each connection, so adding an operator needs no
//! restart. Users and groups that exist only in NSS services (LDAP, sssd)
//! are not seen: a static musl binary has no NSS, and the crate forbids the
//! `unsafe` a libc call would need. The peer's supplementary groups are
//! matched through the group's member list; its primary group by gid.
//!
//! Reads two small files; never writes, never talks to the farm.

use std::path::{Path, PathBuf};

/// The rule, fixed when the socket is opened.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// The daemon's uid (the owner of the socket it just created).
    pub own_uid: u32,
    pub operator_group: Option<String>,
    pub group_file: PathBuf,
    pub passwd_file: PathBuf,
}

/// The peer as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    pub uid: u32,
    pub gid: u32,
}

impl Policy {
    /// `Ok` when `peer` may send requests; `Err` is the answer to send.
    pub(crate) fn check(&self, peer: Peer) -> Result<(), String> {
        if peer.uid == 0 || peer.uid == self.own_uid {
            return Ok(());
        }
        let refused = |why: String| {
            Err(format!(
                "not allowed: uid {} is not root, the daemon's user{why}",
                peer.uid
            ))
        };
        let Some(group) = &self.operator_group else {
            return refused(" (no [gateway] operator_group is set)".into());
        };
        let groups = match std::fs::read_to_string(&self.group_file) {
            Ok(text) => text,
            Err(e) => {
                log::warn!("control: cannot read {}: {e}", self.group_file.display());
                return refused(format!(" (cannot read {})", self.group_file.display()));
            }
        };
        let Some(entry) = find_group(&groups, group) else {
            log::warn!(
                "control: operator_group {group:?} is not in {}",
                self.group_file.display()
            );
            return refused(format!(" (group {group:?} does not exist)"));
        };
        if peer.gid == entry.gid {
            return Ok(());
        }
        let name = std::fs::read_to_string(&self.passwd_file)
            .ok()
            .and_then(|text| user_name(&text, peer.uid));
        if let Some(name) = name {
            if entry.members.iter().any(|m| *m == name) {
                return Ok(());
            }
        }
        refused(format!(" or a member of {group:?}"))
    }
}

/// One `/etc/group` entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GroupEntry<'a> {
    pub gid: u32,
    pub members: Vec<&'a str>,
}

/// `name:password:gid:member,member` lines; malformed lines are skipped.
pub(crate) fn find_group<'a>(text: &'a str, name: &str) -> Option<GroupEntry<'a>> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let (n, _, gid, members) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        if n != name {
            return None;
        }
        Some(GroupEntry {
            gid: gid.trim().parse().ok()?,
            members: members
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .collect(),
        })
    })
}

/// The user name of `uid` in `/etc/passwd` text (`name:x:uid:gid:...`).
pub(crate) fn user_name(text: &str, uid: u32) -> Option<String> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let (name, _, id) = (fields.next()?, fields.next()?, fields.next()?);
        (id.trim().parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

/// The uid that owns `path` (the socket the daemon just bound: its own).
pub(crate) fn owner(path: &Path) -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.uid())
}

/// The gid of `group` in `group_file`, for handing it the socket.
pub(crate) fn group_gid(group_file: &Path, group: &str) -> Option<u32> {
    let text = std::fs::read_to_string(group_file).ok()?;
    find_group(&text, group).map(|g| g.gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUPS: &str = "root:x:0:\nbad\nops:x:4242:alice, bob\nodd:x:nan:carol\n";
    const USERS: &str = "root:x:0:0::/root:/bin/sh\nalice:x:1001:1001::/home/a:/bin/sh\nmallory:x:1002:1002::/:/bin/sh\n";

    #[test]
    fn parses_groups_and_users() {
        assert_eq!(
            find_group(GROUPS, "ops"),
            Some(GroupEntry {
                gid: 4242,
                members: vec!["alice", "bob"]
            })
        );
        assert_eq!(find_group(GROUPS, "odd"), None);
        assert_eq!(find_group(GROUPS, "bad"), None);
        assert_eq!(user_name(USERS, 1001).as_deref(), Some("alice"));
        assert_eq!(user_name(USERS, 7), None);
    }

    #[test]
    fn root_self_and_operators_only() {
        let dir = std::env::temp_dir().join(format!("pg-peer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("group"), GROUPS).unwrap();
        std::fs::write(dir.join("passwd"), USERS).unwrap();
        let mut policy = Policy {
            own_uid: 999,
            operator_group: None,
            group_file: dir.join("group"),
            passwd_file: dir.join("passwd"),
        };
        let peer = |uid, gid| Peer { uid, gid };
        assert!(policy.check(peer(0, 0)).is_ok());
        assert!(policy.check(peer(999, 5)).is_ok());
        let err = policy.check(peer(1001, 1001)).unwrap_err();
        assert!(err.contains("no [gateway] operator_group"), "{err}");
        policy.operator_group = Some("ops".into());
        assert!(policy.check(peer(1001, 1001)).is_ok(), "member by name");
        assert!(policy.check(peer(1002, 4242)).is_ok(), "primary group");
        let err = policy.check(peer(1002, 1002)).unwrap_err();
        assert!(err.contains("not allowed: uid 1002"), "{err}");
        policy.operator_group = Some("ghosts".into());
        assert!(policy.check(peer(1001, 4242)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
