"""Administration of the running pipeline: publishing members, erasing people everywhere."""
