//! Training that goes wrong: a NaN loss stops the run with a message and leaves the last good
//! checkpoint as it was (resuming from it works); a corrupted checkpoint is refused by name.

mod common;

use common::tree::{hvq, make_tree, output, run, temp, train};
use hvq::weights::TensorMap;

#[test]
fn a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    let root = temp("tree-nan");
    make_tree(&root);
    let data = format!("mvtec:{}", root.display());
    let out = temp("nan-run");
    // 16 training images at batch 4: 4 steps an epoch, so step 6 is epoch 2, step 2.
    let (code, text) =
        output(train(&data, &out, 3).args(["--device", "cpu", "--inject-nan-at-step", "6"]));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("training stopped at epoch 2, step 2: the loss is NaN"),
        "{text}"
    );
    assert!(text.contains("(after epoch 1) is kept"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        !out.join("model.safetensors").exists(),
        "no model from a diverged run"
    );
    let checkpoint = TensorMap::read(out.join("checkpoint.safetensors")).unwrap();
    for name in checkpoint.names() {
        let t = checkpoint.get(name).unwrap();
        assert!(
            t.data.iter().all(|v| v.is_finite()),
            "{name} in the kept checkpoint"
        );
    }
    let logged = std::fs::read_to_string(out.join("train-log.jsonl")).unwrap();
    assert_eq!(
        logged.lines().count(),
        1,
        "only epoch 1 finished:\n{logged}"
    );

    // The kept checkpoint resumes (without the fault) to the end.
    let resumed = run(train(&data, &out, 3).args(["--device", "cpu", "--resume"]));
    assert!(resumed.contains("resuming after epoch 1"), "{resumed}");
    assert!(out.join("model.safetensors").exists());
    for d in [root, out] {
        std::fs::remove_dir_all(d).ok();
    }
}

#[test]
fn a_corrupted_checkpoint_is_refused_by_name() {
    let root = temp("tree-corrupt");
    make_tree(&root);
    let data = format!("mvtec:{}", root.display());
    let out = temp("corrupt-run");
    run(train(&data, &out, 3).args(["--device", "cpu", "--stop-after", "1"]));
    // The unfinished run evaluates from its checkpoint and says how far it has come.
    let text = run(hvq()
        .args(["eval", "--device", "cpu", "--data", &data, "--weights"])
        .arg(&out));
    assert!(
        text.contains("unfinished run: after epoch 1 of 3"),
        "{text}"
    );
    let path = out.join("checkpoint.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let (code, text) = output(train(&data, &out, 3).args(["--device", "cpu", "--resume"]));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("checkpoint.safetensors"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    for d in [root, out] {
        std::fs::remove_dir_all(d).ok();
    }
}
