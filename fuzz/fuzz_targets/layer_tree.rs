//! Untrusted zTOCs as the lazy filesystem sees them: building the inode tree, looking up
//! every name, and resolving paths through the merged view (symlinks, whiteouts, `..`)
//! return values or errors, never panic, and never loop.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Ok(z) = ztoc::decode(data) else {
        return;
    };
    let tree = Arc::new(lazyfs::Tree::build(&z.toc.files));
    for node in tree.nodes() {
        for (name, child) in &node.children {
            let found = tree.lookup(node.ino, name).expect("a listed child is found");
            assert_eq!(found.ino, *child);
        }
    }
    let view = lazyfs::view::ImageView::new(vec![lazyfs::view::ViewLayer {
        digest: "sha256:0".into(),
        tree: tree.clone(),
        data: lazyfs::view::LayerData::Memory(Arc::new(Vec::new())),
    }]);
    for f in z.toc.files.iter().take(64) {
        for follow in [false, true] {
            if let Ok(entry) = view.resolve(&f.name, follow) {
                let _ = view.list(&entry);
            }
        }
        let _ = tree.resolve(&f.name);
        let _ = view.resolve(&f.linkname, true);
    }
});
