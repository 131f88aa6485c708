"""A symbol filter in Python: keeps the raw text ticks (`seq,ts,SYMBOL,...`) whose symbol is
in the `symbols` config (comma-separated). Built with componentize-py against wit/, world
`stateful-stage`: on a hot swap its counts go to the next version."""

from wit_world.imports import host
from sluicegate_records import MapStage, State, config_list  # noqa: F401 (State is exported)


class Generator(MapStage):
    def init(self, config):
        self.keep = {s.encode() for s in config_list(config, "symbols")}
        self.kept = self.dropped = 0

    def map(self, record):
        fields = record.split(b",", 3)
        if len(fields) > 3 and (not self.keep or fields[2] in self.keep):
            self.kept += 1
            return (record,)
        self.dropped += 1
        return ()

    def snapshot_state(self):
        return f"{self.kept},{self.dropped}".encode()

    def restore_state(self, state):
        kept, dropped = state.decode().split(",")
        self.kept, self.dropped = int(kept), int(dropped)

    def on_close(self):
        fields = [("kept", str(self.kept)), ("dropped", str(self.dropped))]
        message = f"python filter closed: kept {self.kept}, dropped {self.dropped}"
        host.log(host.Level.INFO, message, fields)
