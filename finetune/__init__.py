"""mmagents.finetune."""
