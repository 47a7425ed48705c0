//! The channel between the FUSE keeper and the FUSE manager it runs: one `SOCK_SEQPACKET`
//! socket pair, one JSON message per packet, and at most one file descriptor passed with a
//! message (`SCM_RIGHTS`). Through it the manager hands the keeper a duplicate of each
//! mount's `/dev/fuse` descriptor, and a new manager gets every live one back.

use crate::manager::MountSpec;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// Largest message (a mount spec is well under 4 KiB).
const MAX_MESSAGE: usize = 64 << 10;

/// Environment variable that names the link's descriptor in a manager the keeper started.
pub const LINK_FD_ENV: &str = "SOCI_FUSE_KEEPER_FD";

/// One message on the link.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LinkMessage {
    /// Manager → keeper: hold this mount's `/dev/fuse` descriptor (attached).
    Keep {
        /// The mount.
        spec: MountSpec,
    },
    /// Manager → keeper: the layer was unmounted; close its descriptor.
    Release {
        /// Its mountpoint.
        mountpoint: PathBuf,
    },
    /// Manager → keeper: every kept mount is served again and the control socket answers; a
    /// manager that dies after this is restarted at once, one that dies before it (a failing
    /// start) after a pause.
    Ready,
    /// Manager → keeper: replace this manager and the keeper itself by the executable now at
    /// the keeper's path, keeping every mount.
    Upgrade,
    /// Keeper → manager: a live mount to serve (its descriptor attached).
    Kept {
        /// The mount.
        spec: MountSpec,
    },
    /// Keeper → manager: every kept mount was sent.
    End,
    /// Both ways: credentials a CRI pull brought for a repository. The manager tells the
    /// keeper each one it learns; the keeper, which holds them in memory only, hands them
    /// all to the next manager before [`LinkMessage::End`].
    Remember {
        /// The repository and its credential.
        entry: registry::KeychainEntry,
    },
}

/// Why the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The socket failed.
    #[error("FUSE keeper link: {0}")]
    Io(#[from] std::io::Error),
    /// A message did not decode.
    #[error("FUSE keeper link: bad message: {0}")]
    Bad(String),
}

/// One end of the link.
#[derive(Debug)]
pub struct Link {
    socket: OwnedFd,
}

impl Link {
    /// A connected pair; both ends are close-on-exec.
    pub fn pair() -> Result<(Link, Link), LinkError> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        Ok((Link { socket: a }, Link { socket: b }))
    }

    /// The end inherited as descriptor `fd`.
    ///
    /// # Safety
    /// `fd` must be an open socket descriptor this process owns and nothing else uses.
    pub unsafe fn from_raw_fd(fd: RawFd) -> Link {
        // SAFETY: the caller vouches for `fd`.
        Link {
            socket: unsafe { OwnedFd::from_raw_fd(fd) },
        }
    }

    /// The end inherited from the keeper, named by [`LINK_FD_ENV`]; `None` when this
    /// process was not started by a keeper.
    pub fn inherited() -> Option<Link> {
        let fd: RawFd = std::env::var(LINK_FD_ENV).ok()?.parse().ok()?;
        // The variable is for this process only, not for anything it starts.
        std::env::remove_var(LINK_FD_ENV);
        // A descriptor that is not an open socket is not ours to take.
        let mut kind: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `kind`.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&mut kind as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r != 0 || kind != libc::SOCK_SEQPACKET {
            return None;
        }
        // Nothing this process starts may hold the link open after this process dies: the
        // keeper learns of the death from the link closing.
        // SAFETY: fcntl on the descriptor just checked.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: checked above to be an open seqpacket socket, passed to us by the keeper.
        Some(unsafe { Link::from_raw_fd(fd) })
    }

    /// Sends `message`, with `fd` attached when given.
    pub fn send(&self, message: &LinkMessage, fd: Option<BorrowedFd<'_>>) -> Result<(), LinkError> {
        let body = serde_json::to_vec(message).map_err(|e| LinkError::Bad(e.to_string()))?;
        if body.len() > MAX_MESSAGE {
            return Err(LinkError::Bad(format!("{} byte message", body.len())));
        }
        let raw = fd.map(|f| [f.as_raw_fd()]);
        let cmsgs: Vec<ControlMessage<'_>> = raw
            .as_ref()
            .map(|r| ControlMessage::ScmRights(r))
            .into_iter()
            .collect();
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(&body)],
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(std::io::Error::from)?;
        Ok(())
    }

    /// Receives the next message and its descriptor (close-on-exec); `None` once the other
    /// end is closed (its process is gone).
    pub fn recv(&self) -> Result<Option<(LinkMessage, Option<OwnedFd>)>, LinkError> {
        let mut body = vec![0u8; MAX_MESSAGE];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let (len, fds) = {
            let mut iov = [IoSliceMut::new(&mut body)];
            let msg = loop {
                match recvmsg::<()>(
                    self.socket.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    r => break r.map_err(std::io::Error::from)?,
                }
            };
            let mut fds = Vec::new();
            for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
                if let ControlMessageOwned::ScmRights(received) = cmsg {
                    // SAFETY: the kernel just installed these descriptors for us.
                    fds.extend(
                        received
                            .into_iter()
                            .map(|f| unsafe { OwnedFd::from_raw_fd(f) }),
                    );
                }
            }
            (msg.bytes, fds)
        };
        if len == 0 {
            return Ok(None);
        }
        let message = body
            .get(..len)
            .ok_or_else(|| LinkError::Bad("length past the buffer".into()))
            .and_then(|b| serde_json::from_slice(b).map_err(|e| LinkError::Bad(e.to_string())))?;
        // One descriptor per message; extra ones (never sent by us) are closed here.
        Ok(Some((message, fds.into_iter().next())))
    }

    /// Waits up to `timeout` for a message or the other end closing; false on timeout.
    pub fn readable_within(&self, timeout: std::time::Duration) -> Result<bool, LinkError> {
        let mut fds = [libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e.into());
        }
        Ok(r > 0)
    }
}

impl AsFd for Link {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::RemoteLayerInfo;

    fn spec(path: &str) -> MountSpec {
        MountSpec {
            connection: None,
            mountpoint: PathBuf::from(path),
            layer: RemoteLayerInfo {
                image_ref: "127.0.0.1:5000/a:b".into(),
                manifest_digest: format!("sha256:{}", "c".repeat(64)),
                index_digest: format!("sha256:{}", "d".repeat(64)),
                layer_digest: format!("sha256:{}", "a".repeat(64)),
                layer_media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                layer_size: 10,
                ztoc_digest: format!("sha256:{}", "b".repeat(64)),
                ztoc_size: 5,
                prefetch: None,
                lean: None,
            },
        }
    }

    #[test]
    fn messages_and_descriptors_cross_and_eof_is_seen() {
        let (a, b) = Link::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        a.send(
            &LinkMessage::Keep { spec: spec("/m/1") },
            Some(file.as_fd()),
        )
        .unwrap();
        a.send(
            &LinkMessage::Release {
                mountpoint: "/m/1".into(),
            },
            None,
        )
        .unwrap();
        let (m, fd) = b.recv().unwrap().unwrap();
        let LinkMessage::Keep { spec: got } = m else {
            panic!("{m:?}")
        };
        assert_eq!(got.mountpoint, PathBuf::from("/m/1"));
        // The descriptor received is the same open file.
        use std::io::{Seek, Write};
        let mut received = std::fs::File::from(fd.expect("a descriptor"));
        received.write_all(b"hello").unwrap();
        let mut original = file;
        assert_eq!(original.stream_position().unwrap(), 5);
        let (m, fd) = b.recv().unwrap().unwrap();
        assert!(matches!(m, LinkMessage::Release { .. }) && fd.is_none());
        assert!(!b
            .readable_within(std::time::Duration::from_millis(10))
            .unwrap());
        drop(a);
        assert!(b
            .readable_within(std::time::Duration::from_millis(10))
            .unwrap());
        assert!(b.recv().unwrap().is_none());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (a, b) = Link::pair().unwrap();
        sendmsg::<()>(
            a.socket.as_raw_fd(),
            &[IoSlice::new(b"{not json")],
            &[],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        assert!(matches!(b.recv(), Err(LinkError::Bad(_))));
    }
}
