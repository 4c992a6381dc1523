"""`make bench`: syncd side by side with rclone, the AWS CLI, s3cmd, a raw boto3 loop and rsync,
on the same emulators, with ratios. See bench/README.md for how to read the output.

Run with the project's interpreter from the repository root: `.venv/bin/python -m bench`.
"""
