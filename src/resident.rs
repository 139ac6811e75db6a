//! The process's own code, given back once it has started.
//!
//! The kernel maps a binary's code in 64 KiB windows (fault-around): a function touched once maps
//! its 15 neighbours too. Starting the service runs code spread over most of the binary (the
//! command line, configuration, migrations, building the OpenAPI document and the router), and
//! all of it would stay in the resident set for the life of the process although serving never
//! runs it again: 16 of the 22 MB of code were resident before the first request.
//!
//! [`release_startup_code`] drops the mappings of the binary's read-only, never-written pages
//! (`MADV_DONTNEED` on a private file mapping). Nothing is lost: those pages are the file's
//! contents, and the next use of one maps it again from the page cache (a minor fault). Pages a
//! relocation wrote (`Anonymous` in `/proc/self/smaps`, the read-only-after-relocation segment)
//! are never touched: their mapping is skipped whole.

/// Gives back the resident pages of this binary's unwritten read-only mappings; returns how many
/// KiB were resident in them (0 where this is not supported).
pub fn release_startup_code() -> u64 {
    #[cfg(target_os = "linux")]
    {
        linux::release().unwrap_or_else(|error| {
            tracing::debug!(%error, "could not give back the startup code's pages");
            0
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;

    /// One mapping of `/proc/self/smaps`.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) struct Mapping {
        pub start: usize,
        pub end: usize,
        pub writable: bool,
        pub path: String,
        pub rss_kib: u64,
        pub anonymous_kib: u64,
    }

    pub(super) fn release() -> io::Result<u64> {
        let exe = std::fs::read_link("/proc/self/exe")?;
        release_mappings_of(&exe.to_string_lossy())
    }

    /// Releases the unwritten read-only mappings of the file at `path` (this binary, or a test's
    /// file).
    pub(super) fn release_mappings_of(path: &str) -> io::Result<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps")?;
        let mut released = 0;
        for mapping in parse(&smaps).iter().filter(|m| releasable(m, path)) {
            // SAFETY: the range is one whole private mapping of the file that is not writable
            // and holds no page of its own (none was ever written): every page in it is the
            // file's content, which the kernel maps again on the next access. Code and constants
            // of the binary are not Rust objects that a release could invalidate.
            let done = unsafe {
                libc::madvise(
                    mapping.start as *mut libc::c_void,
                    mapping.end - mapping.start,
                    libc::MADV_DONTNEED,
                )
            };
            if done == 0 {
                released += mapping.rss_kib;
            }
        }
        Ok(released)
    }

    /// A mapping of the binary whose pages are all still the file's.
    pub(super) fn releasable(mapping: &Mapping, exe: &str) -> bool {
        mapping.path == exe && !mapping.writable && mapping.anonymous_kib == 0 && mapping.rss_kib > 0
    }

    pub(super) fn parse(smaps: &str) -> Vec<Mapping> {
        let mut mappings: Vec<Mapping> = Vec::new();
        for line in smaps.lines() {
            if let Some(mapping) = header(line) {
                mappings.push(mapping);
                continue;
            }
            let (Some(current), Some((field, rest))) = (mappings.last_mut(), line.split_once(':')) else {
                continue;
            };
            let kib = || rest.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            match field {
                "Rss" => current.rss_kib = kib(),
                "Anonymous" => current.anonymous_kib = kib(),
                _ => {}
            }
        }
        mappings
    }

    /// `start-end perms offset dev inode path`; `None` for a field line (`Rss:   12 kB`).
    fn header(line: &str) -> Option<Mapping> {
        let mut fields = line.splitn(6, ' ');
        let (start, end) = fields.next()?.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        let perms = fields.next()?;
        let (_offset, _dev, _inode) = (fields.next()?, fields.next()?, fields.next()?);
        Some(Mapping {
            start,
            end,
            writable: perms.as_bytes().get(1) == Some(&b'w'),
            path: fields.next().unwrap_or_default().trim_start().to_owned(),
            rss_kib: 0,
            anonymous_kib: 0,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 1234                       /opt/confidant
Size:               1024 kB
Rss:                 512 kB
Anonymous:             0 kB
55d0c0100000-55d0c1000000 r-xp 00100000 08:01 1234                       /opt/confidant
Rss:               15000 kB
Anonymous:             0 kB
55d0c1000000-55d0c1100000 r--p 01000000 08:01 1234                       /opt/confidant
Rss:                 700 kB
Anonymous:           700 kB
55d0c1100000-55d0c1200000 rw-p 01100000 08:01 1234                       /opt/confidant
Rss:                  64 kB
Anonymous:            64 kB
7f0000000000-7f0000100000 r-xp 00000000 08:01 99                         /usr/lib/libc.so.6
Rss:                 900 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0 
Rss:                  40 kB
Anonymous:            40 kB
";

        #[test]
        fn only_the_binarys_unwritten_read_only_mappings_are_released() {
            let mappings = parse(SMAPS);
            assert_eq!(mappings.len(), 6);
            assert_eq!(mappings[1].start, 0x55d0c0100000);
            assert_eq!(mappings[1].rss_kib, 15000);
            assert_eq!(mappings[5].path, "");
            let chosen: Vec<_> = mappings
                .iter()
                .filter(|m| releasable(m, "/opt/confidant"))
                .map(|m| m.start)
                .collect();
            // Not the relocated read-only segment (written once), the data, libc or the heap.
            assert_eq!(chosen, [0x55d0c0000000, 0x55d0c0100000]);
        }

        /// A private read-only mapping of a file of `pages` pages, each filled with its number.
        fn mapped(pages: usize, write_first: bool) -> (tempfile::NamedTempFile, *mut u8, usize) {
            use std::io::Write;
            let mut file = tempfile::NamedTempFile::new().unwrap();
            for page in 0..pages {
                file.write_all(&[page as u8; 4096]).unwrap();
            }
            file.flush().unwrap();
            let len = pages * 4096;
            let protection = if write_first {
                libc::PROT_READ | libc::PROT_WRITE
            } else {
                libc::PROT_READ
            };
            // SAFETY: a fresh mapping of a file we own, unmapped by the test.
            let base = unsafe {
                use std::os::fd::AsRawFd;
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    protection,
                    libc::MAP_PRIVATE,
                    file.as_file().as_raw_fd(),
                    0,
                )
            };
            assert_ne!(base, libc::MAP_FAILED);
            (file, base.cast(), len)
        }

        fn resident_kib(path: &str) -> u64 {
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            parse(&smaps).iter().filter(|m| m.path == path).map(|m| m.rss_kib).sum()
        }

        #[test]
        fn an_unwritten_mapping_leaves_the_resident_set_and_reads_the_same_again() {
            let (file, base, len) = mapped(8, false);
            let path = file.path().to_string_lossy().into_owned();
            // SAFETY: `base..base+len` is the mapping made above, read-only as mapped.
            let read = |page: usize| unsafe { std::ptr::read_volatile(base.add(page * 4096 + 7)) };
            assert_eq!((0..8).map(read).collect::<Vec<_>>(), (0..8).collect::<Vec<u8>>());
            assert_eq!(resident_kib(&path), 32);
            assert_eq!(release_mappings_of(&path).unwrap(), 32);
            assert_eq!(resident_kib(&path), 0);
            // Read again: the file's pages, mapped again on use.
            assert_eq!(read(5), 5);
            assert!(resident_kib(&path) > 0);
            // SAFETY: the mapping made above, no longer used.
            unsafe { libc::munmap(base.cast(), len) };
        }

        #[test]
        fn a_mapping_with_a_written_page_is_never_released() {
            // Like the segment the dynamic linker relocates, then makes read-only.
            let (file, base, len) = mapped(4, true);
            let path = file.path().to_string_lossy().into_owned();
            // SAFETY: the mapping made above, writable until the mprotect below.
            unsafe {
                std::ptr::write_volatile(base.add(4096), 0xAB);
                std::ptr::read_volatile(base.add(3 * 4096));
                assert_eq!(libc::mprotect(base.cast(), len, libc::PROT_READ), 0);
            }
            assert_eq!(release_mappings_of(&path).unwrap(), 0);
            // SAFETY: as above, now read-only.
            assert_eq!(
                unsafe { std::ptr::read_volatile(base.add(4096)) },
                0xAB,
                "the written byte is kept"
            );
            assert!(resident_kib(&path) >= 8);
            // SAFETY: the mapping made above, no longer used.
            unsafe { libc::munmap(base.cast(), len) };
        }

        #[test]
        fn the_binary_itself_is_released_and_runs_on() {
            let released = release().unwrap();
            assert!(released > 0, "this test binary's code was resident");
            // Still running: this line's code was mapped again when it ran.
            assert_eq!(parse(SMAPS).len(), 6);
        }
    }
}
