-- Room memberships end with the rights that gave them (issue 12, items 3 and 4).
--
-- A room membership (room_members) lets its user see, join, read and write the room, and edit its
-- workspaces. Some memberships stand only on a right held elsewhere, and must end with it, whichever way
-- that right ends (REST, the CLI, SQL by hand), in the same transaction:
--
-- 1. A member of a `community` room who leaves or is removed from the room's community loses the room.
--    A ban stays on record (banned_at), so coming back to the community does not lift it.
-- 2. A platform admin may join any room, and joining makes a membership. When the admin role is lost,
--    the memberships only that role gave go with it: plain memberships nobody invited them to
--    (invited_by is null), of private rooms they did not create, and of community rooms of communities
--    they are not in. Memberships they were invited to, rooms they created, and room roles someone gave
--    them (moderator, host) stay.
--
-- The servers then re-check the user's open connections (the rights:<user> bus event): they leave the
-- rooms (room:removed) and the rooms' workspace editors (closed with 4403).

CREATE FUNCTION community_member_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM room_members m USING rooms r
    WHERE m.room_id = r.id AND r.community_id = OLD.community_id AND r.visibility = 'community'
      AND m.user_id = OLD.user_id AND m.banned_at IS NULL;
    RETURN NULL;
END
$$;

CREATE TRIGGER community_member_gone AFTER DELETE ON community_members
    FOR EACH ROW EXECUTE FUNCTION community_member_gone();

CREATE FUNCTION admin_role_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM room_members m USING rooms r
    WHERE m.room_id = r.id AND m.user_id = NEW.id AND m.banned_at IS NULL AND m.role = 'member'
      AND m.invited_by IS NULL AND r.created_by <> NEW.id
      AND (r.visibility = 'private'
           OR (r.visibility = 'community' AND NOT EXISTS (
                   SELECT 1 FROM community_members cm WHERE cm.community_id = r.community_id AND cm.user_id = NEW.id)));
    RETURN NULL;
END
$$;

CREATE TRIGGER admin_role_gone AFTER UPDATE OF role ON users
    FOR EACH ROW WHEN (OLD.role = 'admin' AND NEW.role <> 'admin') EXECUTE FUNCTION admin_role_gone();

-- Memberships left behind before this migration by members who had already left their community
-- (platform admins, who may be in any room, keep theirs).
DELETE FROM room_members m USING rooms r
WHERE m.room_id = r.id AND r.visibility = 'community' AND m.banned_at IS NULL AND m.invited_by IS NULL
  AND NOT EXISTS (SELECT 1 FROM community_members cm WHERE cm.community_id = r.community_id AND cm.user_id = m.user_id)
  AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = m.user_id AND u.role = 'admin');
