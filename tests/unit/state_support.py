"""Settings for unit tests of the loop's mechanics with in-memory Kafka doubles.

The scorer's default is the shared merchant table and champion, which need the merchant feed
(a reader of another topic, not part of these doubles); the tests that drive `ScorerLoop` or
`RecordHandler` over in-memory clients run with per-partition state, and say so. The shared
state's own tests are test_merchant_table, test_shared_model, test_table_image,
test_merchant_images and the integration suite.
"""

PER_PARTITION = {"merchant_state": "partition", "model_state": "partition"}
