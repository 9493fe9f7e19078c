//! Prints the sizes of the MLS messages a room of N sends (Welcome, GroupInfo, commits),
//! to size the signaling frame cap: `cargo run --release -p sotto-client --example mls_sizes`.

use sotto_client::mls::MlsDevice;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for n in [10usize, 100, 500] {
        let owner = MlsDevice::new("@owner")?;
        let mut group = owner.create_group()?;
        let others: Vec<MlsDevice> = (1..n)
            .map(|i| MlsDevice::new(&format!("@member{i}")))
            .collect::<Result<_, _>>()?;
        let packages: Vec<Vec<u8>> = others
            .iter()
            .map(|d| d.key_package())
            .collect::<Result<_, _>>()?;
        let t = std::time::Instant::now();
        let add = group.add(&owner, &packages)?;
        let add_time = t.elapsed();
        group.merge_pending(&owner)?;
        let one = MlsDevice::new("@late")?;
        let late = group.add(&owner, &[one.key_package()?])?;
        group.merge_pending(&owner)?;
        let rm = group.remove(&owner, &[3])?;
        println!(
            "room of {n}: add {} at once: commit {} B, welcome {} B, group info {} B ({add_time:?}); one more: commit {} B, welcome {} B; a removal: commit {} B, group info {} B",
            n - 1,
            add.commit.len(),
            add.welcome.as_ref().map_or(0, Vec::len),
            add.group_info.as_ref().map_or(0, Vec::len),
            late.commit.len(),
            late.welcome.as_ref().map_or(0, Vec::len),
            rm.commit.len(),
            rm.group_info.as_ref().map_or(0, Vec::len),
        );
    }
    Ok(())
}
