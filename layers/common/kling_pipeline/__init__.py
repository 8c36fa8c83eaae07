"""Domain package shared by every Lambda function of the Kling video pipeline."""

MODEL_ID = "kwaivgi/kling-v2.0-t2v-master"
PROMPT_OPTIMIZER_MODEL = "wavespeed-ai/prompt-optimizer"
NOTIFICATION_SCHEMA = "kling-pipeline.notification/v1"
