"""SmartAttendance backend package (only the face recognizer lives in this repository)."""
