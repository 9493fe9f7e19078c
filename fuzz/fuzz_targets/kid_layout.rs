//! KID layout: any KID either fails to parse or rebuilds exactly from its parts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_wire::KidLayout;

fuzz_target!(|data: (u8, u8, u64)| {
    let (epoch_bits, index_bits, kid) = data;
    let Ok(layout) = KidLayout::new(epoch_bits % 64, index_bits % 64) else {
        return;
    };
    if let Ok(parts) = layout.parse(kid) {
        let rebuilt = layout
            .kid(parts.context, parts.sender_index, parts.epoch_bits)
            .expect("parts of a parsed KID always fit");
        assert_eq!(rebuilt, kid);
    }
});
