{
  "targets": [
    {
      "target_name": "original_dst",
      "sources": ["proxy/capture/original-dst.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    },
    {
      "target_name": "journal_lock",
      "sources": ["proxy/journal/journal-lock.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
