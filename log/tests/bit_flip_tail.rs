//! Scenario: bit rot (or a torn write) damages the last batch of the last segment.
//!
//! Nothing lies after that batch, so recovery cannot tell it from a torn tail: it must open,
//! cut exactly that batch, report the cut, zero it on disk, keep every earlier batch intact, and
//! append over the cut so that a later crash and reopen find the new batch, not the damaged one.

mod common;

use common::{Model, batches_in, check_log, segment_files, small};
use futures_lite::future::block_on;
use sluice_log::{Journal, MemStorage};

/// Offsets inside the last batch to damage: magic, header checksum, version, index, term,
/// payload length, a reserved byte, the last header byte, then payload bytes.
const HEADER_SPOTS: [u64; 8] = [0, 5, 8, 17, 25, 45, 50, 63];

fn damage_last_batch(spot: impl Fn(u64) -> u64, xor: u8) {
    block_on(async {
        let disk = MemStorage::new();
        let (j, _) = Journal::open(disk.clone(), small()).await.expect("open");
        let mut model = Model::default();
        model.append_n(&j, 1, 90);
        j.flush().await.expect("flush");
        assert!(
            j.segment_count() >= 2,
            "the last segment is not the only one"
        );
        drop(j);

        let last_segment = segment_files(&disk).await.pop().expect("a segment");
        let victim = *batches_in(&disk, &last_segment).last().expect("a batch");
        assert_eq!(victim.index, 90);
        let at = victim.offset + spot(victim.bytes);
        disk.corrupt(&last_segment, at, xor);

        let (j, report) = Journal::open(disk.clone(), small())
            .await
            .unwrap_or_else(|e| panic!("damage at +{}: open failed: {e}", at - victim.offset));
        let cut = report
            .dropped_tail
            .clone()
            .unwrap_or_else(|| panic!("damage at +{}: no cut reported", at - victim.offset));
        assert_eq!(cut.segment, last_segment);
        assert_eq!(cut.index, victim.index);
        assert_eq!(cut.offset, victim.offset);
        assert!(
            cut.bytes > 0 && cut.bytes <= victim.bytes,
            "{cut:?} vs {victim:?}"
        );
        assert!(!cut.reason.is_empty());
        assert_eq!(
            j.next_index(),
            victim.index,
            "only the damaged batch is dropped"
        );
        assert_eq!(j.durable_index(), victim.index - 1);
        let content = disk.contents(&last_segment).expect("segment");
        let from = usize::try_from(victim.offset).expect("small");
        assert!(
            content[from..].iter().all(|b| *b == 0),
            "the cut batch is zeroed on disk"
        );
        model.truncate_after(victim.index - 1);
        assert_eq!(check_log(&j, &model).await, 89);

        // A new batch takes the cut index; a crash and reopen keep it and find no damage.
        assert_eq!(model.append(&j, 2), victim.index);
        j.flush().await.expect("flush");
        drop(j);
        disk.crash(1);
        let (j, report) = Journal::open(disk.clone(), small()).await.expect("reopen");
        assert_eq!(report.dropped_tail, None);
        assert_eq!(j.next_index(), victim.index + 1);
        check_log(&j, &model).await;
    });
}

#[test]
fn damaged_header_of_the_last_batch_is_cut() {
    for spot in HEADER_SPOTS {
        for xor in [0x01, 0x80, 0xFF] {
            damage_last_batch(|_| spot, xor);
        }
    }
}

#[test]
fn damaged_payload_of_the_last_batch_is_cut() {
    // First, middle and last payload byte.
    damage_last_batch(|_| 64, 0x01);
    damage_last_batch(|bytes| 64 + (bytes - 64) / 2, 0x20);
    damage_last_batch(|bytes| bytes - 1, 0x80);
}
