"""The jump config: an inventory hop gets the inventory's user, key and known hosts."""

from __future__ import annotations

from deploy.inventory import load_site, jumps


def test_lab_hop_is_login_with_the_inventorys_key_and_known_hosts(lab_inventory):
    site = load_site(lab_inventory)
    text = jumps.ssh_config_text(site)
    for address in ("10.213.7.11", "10.213.7.21", "10.213.7.22"):
        assert f"Host {address}\n    ProxyJump toppipe@10.213.7.10\n" in text
    hop = text.split("Host 10.213.7.10\n", 1)[1]
    assert "User toppipe" in hop and "StrictHostKeyChecking yes" in hop
    assert f"IdentityFile {lab_inventory / 'ssh' / 'id_ed25519'}" in hop
    assert f"UserKnownHostsFile {lab_inventory / 'ssh' / 'known_hosts'}" in hop


def test_a_hop_is_found_by_address_and_port_only(lab_inventory):
    site = load_site(lab_inventory)
    assert jumps.hop_host(site, "toppipe@10.213.7.10").name == "login"
    assert jumps.hop_host(site, "10.213.7.10:22").name == "login"
    assert jumps.hop_host(site, "10.213.7.10:2222") is None
    assert jumps.hop_host(site, "bastion.example.org") is None
