//! Keeping the resident set to what the gateway uses (docs/PERFORMANCE.md, "Memory").
//!
//! A sidecar runs in every pod, so its resident memory is paid once per pod. Two things
//! kept memory resident that nothing was using:
//!
//! - mimalloc returns freed pages to the OS only when an allocation happens to pass by
//!   after its purge delay. After a burst of connections the proxy goes quiet, nothing
//!   passes by, and RSS stayed at its peak (31-35 MB after 256 connections).
//! - Start-up (config parsing, validation, building the first generation, pingora's
//!   bootstrap) runs code that never runs again, and the kernel maps the binary around each
//!   page it faults in: 9-11 MB of the binary stayed mapped, of which about 2 MB is the
//!   request path.
//!
//! One thread, asleep almost always, gives both back: the start-up pages once, then freed
//! heap memory every few seconds.

use std::time::Duration;

/// How long after start the start-up code's pages are let go: start-up is long over by then.
const AFTER_START: Duration = Duration::from_secs(5);
/// How often freed heap memory is given back.
const RETURN_INTERVAL: Duration = Duration::from_secs(5);

/// Starts the thread. Failing to start it costs memory, not correctness.
pub fn keep_resident_set_small() {
    let spawned = std::thread::Builder::new()
        .name("tollgate-memory".into())
        .stack_size(64 * 1024)
        .spawn(|| {
            std::thread::sleep(AFTER_START);
            let released = release_clean_executable_pages();
            tracing::debug!(
                mappings = released,
                "start-up code pages of the executable released"
            );
            loop {
                // SAFETY: mi_collect takes no pointers and may be called from any thread.
                unsafe { libmimalloc_sys::mi_collect(false) };
                std::thread::sleep(RETURN_INTERVAL);
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "could not start the memory thread; idle memory stays higher");
    }
}

/// Drops this process's references to the executable's read-only pages that are still
/// exactly the file's: they come back from the page cache, with a minor fault, when they
/// run again. Pages the loader wrote (relocated read-only data) are private copies, and a
/// mapping holding any is left alone, as dropping them would lose the relocations.
fn release_clean_executable_pages() -> usize {
    let Ok(executable) = std::fs::read_link("/proc/self/exe") else {
        return 0;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut released = 0;
    for mapping in clean_read_only_mappings(&smaps, &executable.to_string_lossy()) {
        // SAFETY: the range is a whole mapping of the executable file, read-only and without
        // private (written) pages, so MADV_DONTNEED only unmaps pages identical to the file;
        // nothing holds a reference into them that the next access would not fault back in.
        let dropped = unsafe {
            libc::madvise(
                mapping.start as *mut libc::c_void,
                mapping.end - mapping.start,
                libc::MADV_DONTNEED,
            )
        };
        if dropped == 0 {
            released += 1;
        }
    }
    released
}

#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
}

/// The mappings of `path` in `/proc/self/smaps` text that are not writable and hold no
/// anonymous (copied-on-write) pages.
fn clean_read_only_mappings(smaps: &str, path: &str) -> Vec<Mapping> {
    let mut clean = Vec::new();
    let mut current: Option<Mapping> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        if let Some((start, end)) = first.split_once('-').and_then(|(start, end)| {
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
            ))
        }) {
            // A mapping's header: range, permissions, offset, device, inode, path.
            let permissions = fields.next().unwrap_or("");
            let mapped = fields.nth(3).unwrap_or("");
            let read_only = permissions.starts_with('r') && !permissions.contains('w');
            current = (read_only && mapped == path).then_some(Mapping { start, end });
        } else if first == "Anonymous:" {
            let anonymous_kb = fields.next().and_then(|kb| kb.parse::<u64>().ok());
            if let Some(mapping) = current.take() {
                if anonymous_kb == Some(0) {
                    clean.push(mapping);
                }
            }
        }
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0400000 r--p 00000000 fd:01 1234 /usr/bin/tollgate
Size:               4096 kB
Rss:                1500 kB
Anonymous:             0 kB
55d0a0400000-55d0a1000000 r-xp 00400000 fd:01 1234 /usr/bin/tollgate
Size:              12288 kB
Anonymous:             0 kB
55d0a1000000-55d0a1100000 r--p 01000000 fd:01 1234 /usr/bin/tollgate
Size:               1024 kB
Anonymous:           440 kB
55d0a1100000-55d0a1110000 rw-p 01100000 fd:01 1234 /usr/bin/tollgate
Anonymous:            64 kB
7f0000000000-7f0000100000 r-xp 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Anonymous:          1024 kB
";

    #[test]
    fn only_clean_read_only_mappings_of_the_executable_are_released() {
        let clean = clean_read_only_mappings(SMAPS, "/usr/bin/tollgate");
        assert_eq!(
            clean,
            vec![
                Mapping {
                    start: 0x55d0a0000000,
                    end: 0x55d0a0400000
                },
                Mapping {
                    start: 0x55d0a0400000,
                    end: 0x55d0a1000000
                },
            ]
        );
    }

    #[test]
    fn this_process_survives_its_own_release() {
        // The test binary's own clean pages go; everything it runs after this (the parse
        // below included) faults them back in.
        assert!(release_clean_executable_pages() >= 1);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let executable = std::fs::read_link("/proc/self/exe").unwrap_or_default();
        assert!(!clean_read_only_mappings(&smaps, &executable.to_string_lossy()).is_empty());
    }
}
