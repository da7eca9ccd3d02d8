use kd_core::fs::{sha256_file, sha256_hex, write_atomic, write_atomic_with, FsError};

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn atomic_write_replaces_and_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.json");
    write_atomic(&path, b"one").unwrap();
    write_atomic(&path, b"two").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"two");
    assert_eq!(names(dir.path()), ["a.json"]);
    assert_eq!(sha256_file(&path).unwrap(), sha256_hex(b"two"));
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn a_failed_write_leaves_nothing_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.bin");
    std::fs::create_dir_all(path.join("occupied")).unwrap();
    let e = write_atomic(&path, b"x").unwrap_err();
    assert!(e.to_string().contains("out.bin"), "{e}");
    assert_eq!(names(dir.path()), ["out.bin"]);

    let other = dir.path().join("b.bin");
    let r: Result<(), FsError> = write_atomic_with(&other, |tmp| {
        std::fs::write(tmp, b"partial").unwrap();
        Err(FsError::new(tmp, std::io::Error::other("writer failed")))
    });
    assert!(r.is_err());
    assert_eq!(names(dir.path()), ["out.bin"]);
}
