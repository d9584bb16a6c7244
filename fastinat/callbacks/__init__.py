"""Training callbacks, one concern per module (like fastai's `fastai/callback/`).

`record.EpochRecord` turns each finished epoch into `learn.epoch_record` (a dict); the
others read it: `history` (CSV), `tracker` (best weights, early stop), `checkpoint`
(resume), `progress` (rich bars / plain lines), `wandb` (W&B set-up).
"""
