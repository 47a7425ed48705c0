//! Mount plumbing: overlayfs over layer directories, unmounting, and mount table queries.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Where overlayfs writes, for a writable mount.
#[derive(Debug, Clone)]
pub struct UpperDirs {
    /// Changes land here.
    pub upper: PathBuf,
    /// overlayfs' scratch directory (same filesystem as `upper`).
    pub work: PathBuf,
}

/// Mounts overlayfs at `target` with `lowers` (topmost first). Without `upper` the mount is
/// read-only; a single read-only layer is bind-mounted instead (overlayfs wants two lowers
/// when there is no upper directory).
pub fn mount_overlay(
    target: &Path,
    lowers: &[PathBuf],
    upper: Option<&UpperDirs>,
) -> io::Result<()> {
    if lowers.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no layers to mount",
        ));
    }
    let target_c = cstring(target)?;
    if lowers.len() == 1 && upper.is_none() {
        let src = cstring(&lowers[0])?;
        // SAFETY: plain mount(2) call with valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target_c.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // A bind mount ignores MS_RDONLY until it is remounted.
        // SAFETY: as above.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                target_c.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            )
        };
        return if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        };
    }
    let mut data = Vec::new();
    data.extend_from_slice(b"lowerdir=");
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            data.push(b':');
        }
        let bytes = l.as_os_str().as_bytes();
        if bytes.iter().any(|b| matches!(b, b':' | b',' | b'\\')) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "layer path {} contains a character overlayfs options cannot carry",
                    l.display()
                ),
            ));
        }
        data.extend_from_slice(bytes);
    }
    if let Some(u) = upper {
        data.extend_from_slice(b",upperdir=");
        data.extend_from_slice(u.upper.as_os_str().as_bytes());
        data.extend_from_slice(b",workdir=");
        data.extend_from_slice(u.work.as_os_str().as_bytes());
    }
    // Page-sized option buffer is the kernel's limit.
    if data.len() >= 4096 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "overlay options are {} bytes, over the kernel's 4095",
                data.len()
            ),
        ));
    }
    let data = CString::new(data)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in options"))?;
    let fstype = CString::new("overlay").expect("no NUL");
    let flags = if upper.is_none() { libc::MS_RDONLY } else { 0 };
    // SAFETY: valid NUL-terminated strings; data is a C string as overlayfs expects.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target_c.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Unmounts `target`; with `detach` the mount disappears at once and is cleaned up by the
/// kernel when no longer busy (`umount -l`).
pub fn unmount(target: &Path, detach: bool) -> io::Result<()> {
    let c = cstring(target)?;
    let flags = if detach { libc::MNT_DETACH } else { 0 };
    // SAFETY: valid NUL-terminated path.
    let rc = unsafe { libc::umount2(c.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Mount points currently in this process's mount namespace (decoded from mountinfo), in
/// mount order.
pub fn mount_points() -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .collect())
}

/// Mount points at or below `dir`, in mount order (unmount them in reverse).
pub fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(mount_points()?
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect())
}

/// True when `path` is a mount point.
pub fn is_mounted(path: &Path) -> bool {
    mount_points().is_ok_and(|m| m.iter().any(|p| p == path))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`. Only escapes of a byte
/// value (at most `\377`) are decoded; anything else is kept as written, since the kernel
/// never produces it and wrapping it into a byte would name another path.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let escaped = match c {
            b'\\' => b.get(i + 1..i + 4).and_then(octal_byte),
            _ => None,
        };
        match escaped {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte three octal digits spell, if they are octal digits and spell one (≤ 255).
fn octal_byte(digits: &[u8]) -> Option<u8> {
    let mut v: u32 = 0;
    for d in digits {
        if !(b'0'..=b'7').contains(d) {
            return None;
        }
        v = v * 8 + u32::from(d - b'0');
    }
    u8::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes_decode() {
        assert_eq!(super::unescape_mountinfo(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(super::unescape_mountinfo(r"/plain\04"), r"/plain\04");
        assert_eq!(super::unescape_mountinfo(r"/x\377"), "/x\u{fffd}");
    }

    #[test]
    fn mountinfo_escapes_over_a_byte_stay_text() {
        // Three octal digits reach 511: wrapping them into a u8 would overflow (a panic in
        // debug builds) or name another path.
        assert_eq!(super::unescape_mountinfo(r"/a\777b"), r"/a\777b");
        assert_eq!(super::unescape_mountinfo(r"/a\400"), r"/a\400");
        assert_eq!(super::unescape_mountinfo(r"\777\040"), r"\777 ");
    }
}
