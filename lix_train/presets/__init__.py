"""Named experiment configs (quick, synthetic, vkitti2, kitti, nuimages) shipped as package data."""
