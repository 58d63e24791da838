"""Referrals: a crew proposes departments for a film and follows their answers; a department answers."""

from __future__ import annotations

from ui import referral_views, session

referral_views.render(session.require_user())
