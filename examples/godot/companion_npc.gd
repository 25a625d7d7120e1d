# Companion NPC client for Godot 4 (protocol v1, see server/PROTOCOL.md).
# Attach to any Node. Streams a reply with token_received, then reply_received.
extends Node

signal ready_received(session_id: String, first_message: String)
signal token_received(text: String, attempt: int)
signal reply_received(text: String, metadata: Dictionary)
signal memory_written(event: Dictionary)
signal error_received(code: String, message: String)

@export var server_url := "ws://127.0.0.1:8000/v1/ws"
@export var api_key := ""
@export var player_id := "player-1"
@export var npc_id := "mira"

var session_id := ""  # keep it (e.g. in a save file) to resume the conversation
var _ws := WebSocketPeer.new()
var _was_open := false
var _next_id := 0
var _pending_id := ""


func _ready() -> void:
	connect_to_server()


func connect_to_server() -> void:
	var err := _ws.connect_to_url(server_url)
	if err != OK:
		error_received.emit("connect_failed", "Cannot open %s (error %d)" % [server_url, err])


func say(text: String) -> void:
	if _pending_id != "":
		error_received.emit("busy", "Wait for the reply before saying more.")
		return
	_next_id += 1
	_pending_id = "g%d" % _next_id
	_send({"type": "say", "id": _pending_id, "text": text})


func game_event(text: String) -> void:
	_send({"type": "game_event", "text": text})


func _send(message: Dictionary) -> void:
	if _ws.get_ready_state() == WebSocketPeer.STATE_OPEN:
		_ws.send_text(JSON.stringify(message))


func _process(_delta: float) -> void:
	_ws.poll()
	var state := _ws.get_ready_state()
	if state == WebSocketPeer.STATE_OPEN and not _was_open:
		_was_open = true
		var hello := {"type": "hello", "token": api_key, "player_id": player_id, "npc_id": npc_id,
			"subscribe": ["memory"]}
		if session_id != "":
			hello["session_id"] = session_id
		_send(hello)
	elif state == WebSocketPeer.STATE_CLOSED and _was_open:
		_was_open = false
		_pending_id = ""
		if _ws.get_close_code() != 4401:  # 4401: bad API key, do not retry
			get_tree().create_timer(2.0).timeout.connect(connect_to_server)
	while state == WebSocketPeer.STATE_OPEN and _ws.get_available_packet_count() > 0:
		_handle(JSON.parse_string(_ws.get_packet().get_string_from_utf8()))


func _handle(frame) -> void:
	if typeof(frame) != TYPE_DICTIONARY:
		return
	match frame.get("type", ""):
		"ready":
			session_id = frame["session_id"]
			ready_received.emit(session_id, frame["persona"]["first_message"])
		"token":
			token_received.emit(frame["text"], int(frame["attempt"]))
		"reply":
			_pending_id = ""
			reply_received.emit(frame["text"], frame["metadata"])
		"memory":
			memory_written.emit(frame["event"])
		"error":
			if frame.get("reply_to") == _pending_id:
				_pending_id = ""
			error_received.emit(frame["code"], frame["message"])
