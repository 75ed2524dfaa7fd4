//! Server-side batching's merge and split on arbitrary requests: merged rows are the sum of
//! the parts, padding only widens, and splitting a batch-major output gives every request
//! back its own rows.
#![no_main]

use arbitrary::Arbitrary;
use candle_serving::batching::{merge, split};
use candle_serving::servable::{Inputs, Outputs};
use candle_serving::tensor::{Tensor, TensorData};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Part {
    rows: u8,
    width: u8,
    strings: bool,
}

fuzz_target!(|parts: Vec<Part>| {
    if parts.is_empty() || parts.len() > 16 {
        return;
    }
    let inputs: Vec<Inputs> = parts
        .iter()
        .map(|p| {
            let (rows, width) = (usize::from(p.rows % 9), usize::from(p.width % 9));
            let mut inputs = Inputs::new();
            let ids = (0..rows * width).map(|i| i as i64 + 1).collect();
            inputs.insert(
                "ids".into(),
                Tensor::new(vec![rows, width], TensorData::Int64(ids)).expect("consistent"),
            );
            if p.strings {
                let text = (0..rows).map(|r| vec![b'a'; r]).collect();
                inputs.insert(
                    "text".into(),
                    Tensor::new(vec![rows], TensorData::String(text)).expect("consistent"),
                );
            }
            inputs
        })
        .collect();
    let refs: Vec<&Inputs> = inputs.iter().collect();
    let Ok(merged) = merge(&refs, Some(("ids", "mask"))) else {
        return;
    };
    let rows: Vec<usize> = inputs.iter().map(|i| i["ids"].shape()[0]).collect();
    let total: usize = rows.iter().sum();
    assert_eq!(merged["ids"].shape()[0], total);
    let widest = inputs.iter().map(|i| i["ids"].shape()[1]).max().unwrap_or(0);
    assert_eq!(merged["ids"].shape()[1], widest);
    if let Some(mask) = merged.get("mask") {
        let TensorData::Int64(m) = mask.data() else {
            panic!("the mask has the ids' dtype")
        };
        let ones = m.iter().filter(|&&v| v == 1).count();
        let real: usize = inputs.iter().map(|i| i["ids"].data().len()).sum();
        assert_eq!(ones, real, "the mask marks exactly the real positions");
    }
    let mut outputs = Outputs::new();
    outputs.insert(
        "row".into(),
        Tensor::new(vec![total], TensorData::Int64((0..total as i64).collect()))
            .expect("consistent"),
    );
    let back = split(outputs, &rows).expect("batch-major outputs split");
    let mut at = 0i64;
    for (part, &n) in back.iter().zip(&rows) {
        let TensorData::Int64(v) = part["row"].data() else {
            panic!("int64 stays int64")
        };
        assert_eq!(v, &(at..at + n as i64).collect::<Vec<_>>());
        at += n as i64;
    }
});
