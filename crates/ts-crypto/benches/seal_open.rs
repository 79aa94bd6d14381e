//! Seal and open throughput for typical field sizes. `make bench` runs it; figures go in
//! BENCHMARKS.md.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ts_crypto::{DataKey, Envelope, FieldRef};

fn seal_open(c: &mut Criterion) {
    let key = DataKey::new(1, [42; 32]);
    let at = FieldRef {
        folder_id: "6f1c0e1e-6a52-4d8e-9d7e-0d3f6c1b2a90",
        item_id: "b7e0c1d2-3f4a-4b5c-8d9e-0f1a2b3c4d5e",
        field: "content.script.body",
    };
    let mut group = c.benchmark_group("field");
    for size in [64usize, 1024, 16 * 1024] {
        let plaintext = vec![b'x'; size];
        let sealed = Envelope::seal(&key, at, &plaintext).expect("seal");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("seal", size), &plaintext, |b, p| {
            b.iter(|| Envelope::seal(&key, at, p).expect("seal"))
        });
        group.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, e| {
            b.iter(|| e.open(&key, at).expect("open"))
        });
    }
    group.finish();
}

criterion_group!(benches, seal_open);
criterion_main!(benches);
