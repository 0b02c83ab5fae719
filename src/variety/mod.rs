//! Variety: the capabilities the daemon must have against what its servers offer (DESIGN.md
//! §9). [`capability`] maps a server to the capabilities it provides (declared, and found in its
//! tools by keyword rules); it is pure, so the variety analysis, the capability policy and the
//! acquisition pipeline's assessment all read a server the same way. [`package`] names a
//! package exactly (`npm:NAME@VERSION`, `pypi:NAME==VERSION`): what discovery finds and
//! acquisition installs.

pub mod analysis;
pub mod capability;
pub mod ops;
pub mod package;
pub mod policy;
pub mod required;
pub mod room;
