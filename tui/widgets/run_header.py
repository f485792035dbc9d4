"""RunHeader: connection and run state (coloured, always visible), steering, name, ranks and hosts, how the run is
reached (via ssh), elapsed, ETA."""

from __future__ import annotations

from rich.text import Text
from scorch_tui.formatting import duration, state_label
from scorch_tui.model import LOADING, STALLED, RunModel
from scorch_tui.sources import CONNECTING, DEAD, RECONNECTING, TUNNEL_LOST
from textual.widgets import Static


class RunHeader(Static):
    """The top line. States come first and the times sit on the right; the middle gives way when narrow.

    The clock comes from the model, so tests and snapshots can fix it.
    """

    def show(self, model: RunModel) -> None:
        width = self.content_size.width or 78
        right = Text(no_wrap=True)
        right.append("  elapsed ", style="dim")
        right.append(duration(model.elapsed()))
        if model.looks_live:
            right.append("  ETA ", style="dim")
            right.append(duration(model.eta()))
        room = max(10, width - right.cell_len)
        hosts = ", ".join(dict.fromkeys(model.hosts))
        ranks = f"{model.world_size} rank{'s' if model.world_size != 1 else ''}"
        lead = self.lead(model)
        # Through SSH the view says so at every width: a person must know what they look through. The hosts, then
        # the ranks, then the destination give way first; at the narrowest the run's name is cut instead.
        via = f"  via {model.via}" if model.via else ""
        short = f"  via {model.via.split()[0]}" if model.via else ""
        for where, how in ((f"  {ranks} on {hosts}" if hosts else f"  {ranks}", via), (f"  {ranks}", via), ("", via),
                           ("", short)):
            left = self._left(lead, model.name or "(unnamed run)", where, how)
            if left.cell_len <= room:
                break
        else:
            name = Text(model.name or "(unnamed run)")
            name.truncate(max(1, room - lead.cell_len - 2 - len(short)), overflow="ellipsis")
            left = self._left(lead, name.plain, "", short)
        left.truncate(room, overflow="ellipsis", pad=True)
        self.update(left + right)

    @staticmethod
    def _left(lead: Text, name: str, where: str, via: str) -> Text:
        left = lead.copy()
        left.append("  ")
        left.append(name, style="bold")
        left.append(where, style="dim")
        left.append(via, style="bold cyan")
        return left

    @staticmethod
    def lead(model: RunModel) -> Text:
        """The state, first and in words: LIVE RUNNING, STALLED with the age of the last step and rank 0's phase,
        DEAD with the reason, RECONNECTING with how long since the run was last heard."""
        shown = model.liveness()
        lead = Text(no_wrap=True)
        lead.append_text(state_label(shown))
        lead.append(" ")
        if shown == LOADING:  # the history is being read: where it is so far is not where the run ended
            lead.append(f"{100 * (model.loading or 0.0):.0f} % of the event log", style="bold")
            if model.recorded_state and model.recorded_state != "running":
                lead.append(" · run ", style="dim")
                lead.append(model.recorded_state.replace("_", " "), style="dim")
        elif shown == STALLED:
            lead.append(f"no step for {duration(model.progress_age())}", style="bold dark_orange")
            if model.silent_ranks:  # the per-rank channel knows who everyone waits for
                silent = ", ".join(str(r) for r in model.silent_ranks)
                lead.append(f" (rank{'s' if len(model.silent_ranks) > 1 else ''} {silent} silent)", style="dark_orange")
            elif model.phase and model.phase != "training":
                lead.append(f" ({model.phase})", style="dark_orange")
            if model.connection == RECONNECTING and model.last_heard() is not None:  # rank 0 itself is silent
                lead.append(f", silent for {duration(model.last_heard())}", style="yellow")
        elif shown == DEAD:
            lead.append(model.connection_detail or "the run's process is gone", style="bold red")
        elif shown == TUNNEL_LOST:  # the way to the run went, not the run: say which
            lead.append("reopening the SSH tunnel; the run is not to blame", style="yellow")
        elif shown == CONNECTING and model.started is None:  # nothing from the run yet (--wait, or a slow start)
            lead.append("waiting for the run", style="yellow")
        elif shown == RECONNECTING and model.state == "running" and model.last_heard() is not None:
            lead.append(f"last heard {duration(model.last_heard())} ago", style="yellow")
        else:
            lead.append_text(Text(" PAUSED ", style="bold black on yellow") if model.paused else state_label(model.state))
            if model.stop_pending and model.state == "running":
                lead.append(" · stops after this epoch", style="bold yellow")
        steered = [word for word in model.steering.words() if word != "paused"] if model.state == "running" else []
        if steered:  # what a person changed while it runs (scorch/steering.py): lr x0.5 · patience off · ckpt every 10 min
            lead.append("  " + " · ".join(steered), style="yellow")
        return lead

    def on_resize(self) -> None:
        model = getattr(self.screen, "model", None)
        if model is not None:
            self.show(model)
