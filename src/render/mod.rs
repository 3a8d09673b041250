//! Figures: deterministic PNG and GIF output.
