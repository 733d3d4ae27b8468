//! `crds/` must be exactly what `ferrocket-operator crd` prints.

#[test]
fn checked_in_crds_match_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/ferrocket.io.yaml");
    let on_disk = std::fs::read_to_string(path).expect("crds/ferrocket.io.yaml");
    let generated = ferrocket_operator::crds_yaml().unwrap();
    assert!(
        on_disk == generated,
        "crds/ferrocket.io.yaml is stale: run `cargo run -p ferrocket-operator -- crd > crds/ferrocket.io.yaml`"
    );
    // Two CRDs, both with the status subresource.
    assert_eq!(
        generated.matches("kind: CustomResourceDefinition").count(),
        2
    );
    assert_eq!(generated.matches("status: {}").count(), 2);
}
