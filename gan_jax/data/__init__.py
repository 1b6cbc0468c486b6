"""Data: datasets as uint8 arrays from any source (`sources`), the IDX format (`idx`), the
tensorflow-datasets builders (`tfds_builders`), and the on-device batch gather of the train step
(`batches`)."""
