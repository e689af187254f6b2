"""Where a reward is read: positions of the last real token and of the last prompt token, whatever the
padding side (right or left), and the hidden state there (last-real-token pooling)."""

from __future__ import annotations

import torch


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, whatever the padding side.

    Args:
        attention_mask: ``[N, T]`` with 1 on real tokens.
    Returns:
        ``[N]`` long: the largest position holding a 1.
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(dim=-1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[N, T]`` positions counting real tokens only, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def pool_last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[N, T, d], [N, T] -> [N, d]``: the hidden state at each row's last real token."""
    index = last_token_index(attention_mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def prompt_positions(attention_mask: torch.Tensor, prompt_last_index: torch.Tensor) -> torch.Tensor:
    """Padded positions of each row's last prompt token, whatever the padding side.

    Args:
        attention_mask: ``[N, T]`` with 1 on real tokens.
        prompt_last_index: ``[N]`` index of the prompt's last token counted from the row's first real
            token (``EncodedSequence.response_start - 1``).
    Returns:
        ``[N]`` long positions into the padded rows.
    """
    lengths = attention_mask.long().sum(-1)
    index = prompt_last_index.to(device=attention_mask.device, dtype=torch.long)
    if index.shape != lengths.shape:
        raise ValueError(f"prompt_last_index has shape {tuple(index.shape)}, expected ({lengths.shape[0]},)")
    if bool(((index < 0) | (index >= lengths)).any()):
        raise ValueError("prompt_last_index must lie inside each row's real tokens")
    leading_padding = (attention_mask.long().cumsum(-1) == 0).sum(-1)
    return leading_padding + index
