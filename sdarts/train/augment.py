"""Cutout (DeVries & Taylor, 2017) on a whole batch at once, on the batch's device."""

from __future__ import annotations

import torch


def cutout(images: torch.Tensor, length: int) -> torch.Tensor:
    """``images`` (N, C, H, W) with one ``length`` x ``length`` square per image set to 0.

    As the DARTS code's ``Cutout``: the square's centre is uniform over the image and the
    square is clipped at the borders; applied after normalization, so 0 is the mean colour.
    Draws from the global torch RNG of the images' device.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if length <= 0:
        return images
    n, _, h, w = images.shape
    cy = torch.randint(0, h, (n, 1), device=images.device)
    cx = torch.randint(0, w, (n, 1), device=images.device)
    rows = torch.arange(h, device=images.device)
    cols = torch.arange(w, device=images.device)
    in_rows = (rows >= cy - length // 2) & (rows < cy + length // 2)  # (n, h)
    in_cols = (cols >= cx - length // 2) & (cols < cx + length // 2)  # (n, w)
    hole = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return images.masked_fill(hole, 0.0)
