//! Cache chunks: `read_chunk` on arbitrary and mutated chunk files. Beyond raw byte mutations,
//! chunks are rebuilt around mutated parts with every checksum fixed (written here from the
//! format documented in `cache.rs`, independently of its writer), so the mutation reaches what
//! the checksums guard: the header fields, the LZ4 layer and the feature decoder.

use bytes::Bytes;
use cachew_fuzzing::{boundary_u64, bounded, bytes, config, mutated};
use cachew_pipeline::cache::{self, CacheError, CachedRecord, Compression};
use cachew_pipeline::exec::{Features, Value};
use cachew_pipeline::image::Image;
use cachew_pipeline::tensor::Tensor;
use proptest::prelude::*;

const FINGERPRINT: [u8; 32] = [0x5a; 32];
const SPLIT: u32 = 3;
/// Record ids of the split.
const FIRST: u64 = 10;
const RECORDS: u64 = 3;

/// Features of every kind the cache stores.
fn features(i: u8) -> Features {
    Features {
        values: vec![
            ("raw".into(), Value::Bytes(Bytes::from(vec![i; 5]))),
            (
                "label".into(),
                Value::Tensor(Tensor::from_i64(&[i64::from(i), -1], vec![2])),
            ),
            (
                "image".into(),
                Value::Image(Image::new(Bytes::from(vec![i; 4 * 5 * 3]), 4, 5, 3).unwrap()),
            ),
        ],
    }
}

/// The serialized payload of each record (uncompressed).
fn payloads() -> Vec<Vec<u8>> {
    (0..RECORDS as u8)
        .map(|i| cache::encode_features(&features(i)))
        .collect()
}

/// A chunk in the documented format with every checksum right.
fn chunk(flags: u32, split: u32, count: u32, frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"CACHEWCH");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&split.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&FINGERPRINT);
    let header_crc = crc32c::crc32c(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    let mut all = 0u32;
    for (id, payload) in frames {
        let sha = [0x11u8; 32];
        let mut covered = id.to_le_bytes().to_vec();
        covered.extend_from_slice(&sha);
        covered.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        covered.extend_from_slice(payload);
        let crc = crc32c::crc32c(&covered);
        all = crc32c::crc32c_append(all, &crc.to_le_bytes());
        out.extend_from_slice(&covered[..44]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(payload);
    }
    out.extend_from_slice(b"CACHEWEN");
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&all.to_le_bytes());
    out
}

/// A valid chunk of the split, its payloads LZ4-compressed or not.
fn valid_chunk(lz4: bool) -> Vec<u8> {
    let frames: Vec<(u64, Vec<u8>)> = payloads()
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let p = if lz4 {
                lz4_flex::compress_prepend_size(&p)
            } else {
                p
            };
            (FIRST + i as u64, p)
        })
        .collect();
    chunk(u32::from(lz4), SPLIT, RECORDS as u32, &frames)
}

/// Reads `data` as the split's chunk: either every record of the split, or a corrupt-chunk
/// error naming the file.
fn check(data: Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = cache::chunk_path(dir.path(), &FINGERPRINT, SPLIT);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &data).unwrap();
    let cache_dir = dir.path().to_path_buf();
    bounded("read_chunk", move || {
        match cache::read_chunk(&cache_dir, &FINGERPRINT, SPLIT, FIRST..FIRST + RECORDS) {
            Ok(Some(records)) => {
                let ids: Vec<u64> = records.iter().map(|r| r.record_id).collect();
                assert_eq!(ids, (FIRST..FIRST + RECORDS).collect::<Vec<_>>());
            }
            Ok(None) => panic!("a chunk file that exists read as missing"),
            Err(CacheError::Corrupt { path: named, .. }) => assert_eq!(named, path),
            Err(other) => panic!("not a corrupt-chunk error: {other}"),
        }
    });
}

/// A valid chunk whose record `which` carries `payload` (checksums fixed).
fn with_payload(lz4: bool, which: usize, payload: Vec<u8>) -> Vec<u8> {
    let mut frames: Vec<(u64, Vec<u8>)> = payloads()
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let p = if lz4 {
                lz4_flex::compress_prepend_size(&p)
            } else {
                p
            };
            (FIRST + i as u64, p)
        })
        .collect();
    if let Some(frame) = frames.get_mut(which) {
        frame.1 = payload;
    }
    chunk(u32::from(lz4), SPLIT, RECORDS as u32, &frames)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_chunks(data in bytes(600)) {
        check(data);
    }

    #[test]
    fn mutated_chunks(data in mutated(valid_chunk(false))) {
        check(data);
    }

    #[test]
    fn mutated_compressed_chunks(data in mutated(valid_chunk(true))) {
        check(data);
    }

    #[test]
    fn mutated_features_behind_valid_checksums(
        which in 0..RECORDS as usize,
        payload in mutated(payloads().remove(0)),
    ) {
        check(with_payload(false, which, payload));
    }

    #[test]
    fn mutated_lz4_behind_valid_checksums(
        which in 0..RECORDS as usize,
        payload in mutated(lz4_flex::compress_prepend_size(&payloads().remove(0))),
    ) {
        check(with_payload(true, which, payload));
    }

    #[test]
    fn header_fields_behind_a_valid_checksum(
        flags in boundary_u64(),
        split in prop_oneof![Just(SPLIT), any::<u32>()],
        count in boundary_u64(),
    ) {
        let frames: Vec<(u64, Vec<u8>)> = payloads()
            .into_iter()
            .enumerate()
            .map(|(i, p)| (FIRST + i as u64, p))
            .collect();
        check(chunk(flags as u32, split, count as u32, &frames));
    }
}

#[test]
fn the_valid_seeds_read_whole() {
    for lz4 in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = cache::chunk_path(dir.path(), &FINGERPRINT, SPLIT);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, valid_chunk(lz4)).unwrap();
        let records = cache::read_chunk(dir.path(), &FINGERPRINT, SPLIT, FIRST..FIRST + RECORDS)
            .unwrap()
            .unwrap();
        assert_eq!(records.len(), RECORDS as usize);
        // The independent writer above agrees with the real one byte for byte.
        let mut real: Vec<CachedRecord> = (0..RECORDS as u8)
            .map(|i| CachedRecord {
                record_id: FIRST + u64::from(i),
                record_sha256: [0x11; 32],
                features: features(i),
            })
            .collect();
        let compression = if lz4 {
            Compression::Lz4
        } else {
            Compression::None
        };
        let other = tempfile::tempdir().unwrap();
        let written =
            cache::write_chunk(other.path(), &FINGERPRINT, SPLIT, &mut real, compression).unwrap();
        assert_eq!(std::fs::read(written).unwrap(), valid_chunk(lz4));
    }
}

/// Chunks that once broke `read_chunk` (`tests/corpus/cache-chunk/`): each is refused as
/// corrupt, within the memory limit.
#[test]
fn corpus_of_chunks_that_broke_the_reader() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/cache-chunk");
    for (path, data) in cachew_fuzzing::corpus(&dir) {
        let cache_dir = tempfile::tempdir().unwrap();
        let chunk = cache::chunk_path(cache_dir.path(), &FINGERPRINT, SPLIT);
        std::fs::create_dir_all(chunk.parent().unwrap()).unwrap();
        std::fs::write(&chunk, &data).unwrap();
        match cache::read_chunk(
            cache_dir.path(),
            &FINGERPRINT,
            SPLIT,
            FIRST..FIRST + RECORDS,
        ) {
            Err(CacheError::Corrupt { reason, .. }) => {
                assert!(!reason.is_empty(), "{}", path.display());
            }
            other => panic!("{}: read as {other:?}", path.display()),
        }
    }
}
